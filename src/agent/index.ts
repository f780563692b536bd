// devloc's terminal library: embed `Agent` to get a device registered and kept registered with
// no user involvement, or talk to a running devloc-agent through `controlRequest`.
// Imports only src/wire, src/net/client.ts, src/net/clientsession.ts and node built-ins
// (test/agent/imports.test.ts checks it): it is meant for small devices.
// The public API is what devloc-agent(3) describes (SYNOPSIS); the rest is exported for devloc's
// own daemon, tools and tests and may change without notice.
export type {
  AgentCounters, AgentEvents, AgentOptions, AgentState, AgentStatus, GroupMembers, LookupEntry, PresenceStatus, RegistrationInfo,
} from './types.js';
export type { PresenceRecord, Requirement } from '../wire/catalog.js';
export type { AgentLog, LogLevel } from './errors.js';
export { Agent } from './agent.js';
export { AGENT_ERROR_CODES, AgentError } from './errors.js';
export type { Address } from '../wire/addr.js';
export { formatAddress, parseAddress } from '../wire/addr.js';
export type { MatchClientOptions, MatchPartyMember, MatchResult, MatchSpec } from './match.js';
export { CONTROL_COMMANDS, ControlServer, dispatch, handleLine } from './control.js';
export type { ControlRequest, ControlResponse } from './control.js';
export { ControlError, controlRequest, DEFAULT_CONTROL_SOCKET } from './control-client.js';
export type { AuthdPublicKey, DeviceIdentity, Loaded } from './identity.js';
export { IDENTITY_FORBIDDEN_MODE, loadAuthdKey, loadDeviceIdentity, parseAuthdKey, parseDeviceIdentity } from './identity.js';
export { formatId, isIdText, isNickname, parseId } from './ids.js';
export type { LocalAddress } from './interfaces.js';
export { addressSignature, localAddresses } from './interfaces.js';
export type { Classification, ReflectAnswer, ReflectorTests } from './netmode.js';
export { classifyNetwork, decideNetMode, encodeReflect, MAX_REFLECT_RESULT } from './netmode.js';
export type { PeerEntry } from './peers.js';
export { AddressBook, AddressBookError, MAX_PEERS } from './peers.js';
export type { CandidateKind, ChannelEvents, ChannelState, ChannelStats, ChannelSummary, ChannelTiming, PathInfo } from './channel.js';
export { Channel } from './channel.js';
export type { PathPlan, PeerOptions, RelayPolicy } from './punch.js';
export { PeerManager, planPath } from './punch.js';
export type { ConnectResult } from './channel-control.js';
export { CHANNEL_COMMANDS } from './channel-control.js';
