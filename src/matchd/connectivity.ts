// The direct-connectivity matrix moved to src/wire/connectivity.ts, so that the agent (which may
// import only src/wire) shares it with matchd; this module keeps matchd's imports working.
export * from '../wire/connectivity.js';
