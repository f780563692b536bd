// Public API of the wire codec: pure encode/decode/validate, tickets, sealing and session MACs.
export * from './addr.js';
export * from './auth.js';
export * from './catalog.js';
export * from './cbor.js';
export * from './connectivity.js';
export * from './constants.js';
export * from './envelope.js';
export * from './errors.js';
export * from './keys.js';
export * from './peer.js';
export * from './schema.js';
export * from './seal.js';
export * from './session.js';
export * from './ticket.js';
