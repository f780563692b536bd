-- Wireshark dissector for devloc, the device-identity locator protocol (CBOR over UDP).
--
-- Every devloc datagram is one CBOR array (see devloc-protocol(7)):
--   [version, type, requestId (8-byte bstr), body (map)]
--   [version, type, requestId, body, [sessionId (16-byte bstr), seq, mac (16-byte bstr)]]
-- This file reads the envelope itself (a small, bounded CBOR head reader), names its fields,
-- the message type and, for ERROR, the error code, then hands the body map to Wireshark's own
-- CBOR dissector.
--
-- Use:
--   tshark -X lua_script:contrib/wireshark/devloc.lua -r capture.pcap
--   wireshark -X lua_script:contrib/wireshark/devloc.lua capture.pcap
-- or copy it to the personal Lua plugins folder (Help > About > Folders), e.g.
--   ~/.local/lib/wireshark/plugins/devloc.lua
-- It registers on UDP ports 4700-4704 and, for every other port (peer traffic: PUNCH and DATA
-- between terminals on their ephemeral ports), as a heuristic UDP dissector that claims only
-- well-formed devloc envelopes (see looks_like_devloc below); no Decode As needed.
--
-- Display filter fields: devloc.version, devloc.type, devloc.type_name, devloc.rid,
-- devloc.body, devloc.field, devloc.auth, devloc.sid, devloc.seq, devloc.mac,
-- devloc.error_code, devloc.error_name; expert infos devloc.malformed, devloc.unknown_type,
-- devloc.auth_mismatch.
--
-- Written for Lua 5.2 (Wireshark 3.x/4.0) and 5.4 (Wireshark 4.4+): plain arithmetic, no bit32.

-- BEGIN GENERATED TABLES by tools/gen-dissector-table.ts from src/wire/{catalog,errors,constants}.ts.
-- Do not edit by hand: run `npx tsx tools/gen-dissector-table.ts`.
local message_types = {
  [0x02] = "AUTH_REQUEST",
  [0x03] = "AUTH_RESPONSE",
  [0x08] = "REVOKE",
  [0x09] = "REVOKE_ACK",
  [0x0a] = "ADDR_CHALLENGE",
  [0x0b] = "ADDR_PROOF",
  [0x10] = "REGISTER",
  [0x11] = "REGISTER_ACK",
  [0x12] = "REFRESH",
  [0x13] = "REFRESH_ACK",
  [0x14] = "UNREGISTER",
  [0x15] = "UNREGISTER_ACK",
  [0x20] = "QUERY_ADDR",
  [0x21] = "QUERY_ADDR_RESULT",
  [0x22] = "QUERY_STATUS",
  [0x23] = "QUERY_STATUS_RESULT",
  [0x24] = "WATCH",
  [0x25] = "WATCH_ACK",
  [0x26] = "UNWATCH",
  [0x27] = "UNWATCH_ACK",
  [0x28] = "PRESENCE_SET",
  [0x29] = "PRESENCE_SET_ACK",
  [0x2a] = "PRESENCE",
  [0x2b] = "PRESENCE_ACK",
  [0x2c] = "SEARCH",
  [0x2d] = "SEARCH_RESULT",
  [0x30] = "GROUP_CREATE",
  [0x31] = "GROUP_CREATE_ACK",
  [0x32] = "GROUP_JOIN",
  [0x33] = "GROUP_JOIN_ACK",
  [0x34] = "GROUP_LEAVE",
  [0x35] = "GROUP_LEAVE_ACK",
  [0x36] = "GROUP_MEMBERS",
  [0x37] = "GROUP_MEMBERS_RESULT",
  [0x40] = "PROBE",
  [0x41] = "PROBE_ACK",
  [0x42] = "INTRODUCE",
  [0x43] = "INTRODUCE_ACK",
  [0x44] = "INTRO",
  [0x45] = "INTRO_ACK",
  [0x50] = "REFLECT",
  [0x51] = "REFLECT_RESULT",
  [0x60] = "MATCH_SUBMIT",
  [0x61] = "MATCH_SUBMIT_ACK",
  [0x62] = "MATCH_STATUS",
  [0x63] = "MATCH_STATUS_RESULT",
  [0x64] = "MATCH_CANCEL",
  [0x65] = "MATCH_CANCEL_ACK",
  [0x66] = "MATCH_RESULT",
  [0x67] = "MATCH_RESULT_ACK",
  [0x70] = "PUNCH",
  [0x71] = "PUNCH_ACK",
  [0x72] = "DATA",
  [0x73] = "DATA_ACK",
  [0x7f] = "ERROR",
}
-- How each message is authenticated: "none", "sealed" or "session" (envelope item 5).
local message_auth = {
  [0x02] = "sealed",
  [0x03] = "sealed",
  [0x08] = "none",
  [0x09] = "none",
  [0x0a] = "session",
  [0x0b] = "none",
  [0x10] = "session",
  [0x11] = "session",
  [0x12] = "session",
  [0x13] = "session",
  [0x14] = "session",
  [0x15] = "session",
  [0x20] = "session",
  [0x21] = "session",
  [0x22] = "session",
  [0x23] = "session",
  [0x24] = "session",
  [0x25] = "session",
  [0x26] = "session",
  [0x27] = "session",
  [0x28] = "session",
  [0x29] = "session",
  [0x2a] = "session",
  [0x2b] = "session",
  [0x2c] = "session",
  [0x2d] = "session",
  [0x30] = "session",
  [0x31] = "session",
  [0x32] = "session",
  [0x33] = "session",
  [0x34] = "session",
  [0x35] = "session",
  [0x36] = "session",
  [0x37] = "session",
  [0x40] = "session",
  [0x41] = "session",
  [0x42] = "session",
  [0x43] = "session",
  [0x44] = "session",
  [0x45] = "session",
  [0x50] = "none",
  [0x51] = "none",
  [0x60] = "session",
  [0x61] = "session",
  [0x62] = "session",
  [0x63] = "session",
  [0x64] = "session",
  [0x65] = "session",
  [0x66] = "session",
  [0x67] = "session",
  [0x70] = "session",
  [0x71] = "session",
  [0x72] = "session",
  [0x73] = "session",
  [0x7f] = "none",
}
-- Top-level body keys of each message: key -> field name.
local body_fields = {
  [0x02] = { [1] = "authdKey", [2] = "ephemeral", [3] = "sealed", [4] = "cookie", [15] = "padding" },
  [0x03] = { [1] = "sealed" },
  [0x08] = { [1] = "locatorId", [2] = "code", [3] = "untilS", [4] = "timeMs", [5] = "kid", [6] = "signature" },
  [0x09] = { },
  [0x0a] = { [1] = "token" },
  [0x0b] = { [1] = "sid", [2] = "token" },
  [0x10] = { [1] = "ticket", [2] = "timeMs", [3] = "localAddrs", [4] = "netMode", [5] = "nickname", [6] = "mediaId", [7] = "community", [8] = "visibility", [9] = "allow", [10] = "joinGroups", [11] = "ttlS", [12] = "reachable", [13] = "presence" },
  [0x11] = { [1] = "observed", [2] = "ttlS", [3] = "refreshS", [4] = "locatorId" },
  [0x12] = { [1] = "ttlS", [2] = "netMode", [3] = "localAddrs" },
  [0x13] = { [1] = "observed", [2] = "ttlS", [3] = "refreshS", [4] = "locatorId" },
  [0x14] = { },
  [0x15] = { },
  [0x20] = { [1] = "ids", [2] = "cursor" },
  [0x21] = { [1] = "entries", [2] = "nextCursor" },
  [0x22] = { [1] = "ids", [2] = "cursor", [3] = "presence" },
  [0x23] = { [1] = "online", [2] = "nextCursor", [3] = "presence" },
  [0x24] = { [1] = "ids", [2] = "cursor" },
  [0x25] = { [1] = "entries", [2] = "nextCursor", [3] = "watching" },
  [0x26] = { [1] = "ids", [2] = "all" },
  [0x27] = { [1] = "watching" },
  [0x28] = { [1] = "presence" },
  [0x29] = { },
  [0x2a] = { [1] = "id", [2] = "online", [3] = "nickname", [4] = "presence" },
  [0x2b] = { [1] = "id" },
  [0x2c] = { [1] = "mediaId", [2] = "requirements", [3] = "after" },
  [0x2d] = { [1] = "entries", [2] = "next" },
  [0x30] = { [1] = "name", [3] = "nonce", [4] = "sealedCodeKey" },
  [0x31] = { [1] = "groupId" },
  [0x32] = { [1] = "groupId", [3] = "nonce", [4] = "proof" },
  [0x33] = { [1] = "groupId" },
  [0x34] = { [1] = "groupId" },
  [0x35] = { },
  [0x36] = { [1] = "groupId", [2] = "cursor" },
  [0x37] = { [1] = "members", [2] = "nextCursor", [3] = "total", [4] = "name" },
  [0x40] = { },
  [0x41] = { },
  [0x42] = { [1] = "target", [2] = "netMode", [3] = "localAddrs", [4] = "relayed", [5] = "resume" },
  [0x43] = { [1] = "channelId", [2] = "peer", [3] = "addr", [4] = "localAddrs", [5] = "netMode", [6] = "nickname", [7] = "sealedKey", [8] = "observed", [9] = "relayed", [10] = "resume" },
  [0x44] = { [1] = "channelId", [2] = "peer", [3] = "addr", [4] = "localAddrs", [5] = "netMode", [6] = "nickname", [7] = "sealedKey", [8] = "observed", [9] = "relayed", [10] = "resume" },
  [0x45] = { [1] = "channelId" },
  [0x50] = { [1] = "change", [15] = "padding" },
  [0x51] = { [1] = "observed", [2] = "from", [3] = "otherPort", [4] = "otherIp" },
  [0x60] = { [1] = "ticket", [2] = "timeMs", [3] = "mediaId", [4] = "appType", [5] = "minParty", [6] = "maxParty", [7] = "attrs", [8] = "requirements", [9] = "netMode", [10] = "maxWaitS", [11] = "nickname", [12] = "visibility", [13] = "relay" },
  [0x61] = { [1] = "matchId", [2] = "deadlineS" },
  [0x62] = { [1] = "matchId" },
  [0x63] = { [1] = "matchId", [2] = "state", [3] = "members", [4] = "host", [5] = "noPath" },
  [0x64] = { [1] = "matchId" },
  [0x65] = { [1] = "matchId", [2] = "state", [3] = "members", [4] = "host", [5] = "noPath" },
  [0x66] = { [1] = "matchId", [2] = "state", [3] = "members", [4] = "host", [5] = "noPath" },
  [0x67] = { [1] = "matchId" },
  [0x70] = { [1] = "eph", [2] = "close" },
  [0x71] = { [1] = "eph", [2] = "observed" },
  [0x72] = { [1] = "n", [2] = "payload", [3] = "ack" },
  [0x73] = { [1] = "n" },
  [0x7f] = { [1] = "code", [2] = "message", [3] = "retryAfterMs", [4] = "cookie" },
}
local error_codes = {
  [1] = "MALFORMED",
  [2] = "BAD_MESSAGE",
  [3] = "UNSUPPORTED_VERSION",
  [4] = "UNKNOWN_TYPE",
  [5] = "TOO_LARGE",
  [6] = "RATE_LIMITED",
  [7] = "TRY_LATER",
  [16] = "UNKNOWN_DEVICE",
  [17] = "REVOKED",
  [18] = "BAD_PROOF",
  [19] = "CLOCK_SKEW",
  [20] = "COOKIE_REQUIRED",
  [32] = "BAD_TICKET",
  [33] = "TICKET_EXPIRED",
  [34] = "WRONG_AUDIENCE",
  [35] = "BAD_MAC",
  [36] = "REPLAY",
  [37] = "NO_SESSION",
  [38] = "KICKED",
  [39] = "IDENTITY_CONFLICT",
  [48] = "FORBIDDEN",
  [49] = "NOT_FOUND",
  [50] = "CONFLICT",
  [51] = "FULL",
  [63] = "INTERNAL",
}
local ERROR_TYPE = 0x7f
local PROTOCOL_VERSION = 1
local REQUEST_ID_BYTES = 8
local SESSION_ID_BYTES = 16
local MAC_BYTES = 16
local MAX_DATAGRAM = 1200
local MAX_DEPTH = 8
local MAX_ITEMS = 600
-- Default UDP ports (DEFAULT_PORTS, plus the reflector's alternate port).
local default_ports = {
  [4700] = "authd",
  [4701] = "locatord",
  [4702] = "reflector",
  [4703] = "matchd",
  [4704] = "reflector-alt",
}
-- END GENERATED TABLES

local devloc = Proto("devloc", "devloc Locator Protocol")

local f = {
  version = ProtoField.uint32("devloc.version", "Version", base.DEC),
  type = ProtoField.uint32("devloc.type", "Message type", base.HEX, message_types),
  type_name = ProtoField.string("devloc.type_name", "Message name"),
  rid = ProtoField.bytes("devloc.rid", "Request ID"),
  body = ProtoField.bytes("devloc.body", "Body"),
  field = ProtoField.string("devloc.field", "Field"),
  auth = ProtoField.bytes("devloc.auth", "Session authentication"),
  sid = ProtoField.bytes("devloc.sid", "Session ID"),
  seq = ProtoField.uint64("devloc.seq", "Sequence number", base.DEC),
  mac = ProtoField.bytes("devloc.mac", "MAC"),
  error_code = ProtoField.uint32("devloc.error_code", "Error code", base.DEC, error_codes),
  error_name = ProtoField.string("devloc.error_name", "Error name"),
}
devloc.fields = { f.version, f.type, f.type_name, f.rid, f.body, f.field, f.auth, f.sid, f.seq, f.mac,
  f.error_code, f.error_name }

local ef = {
  malformed = ProtoExpert.new("devloc.malformed", "Malformed devloc datagram",
    expert.group.MALFORMED, expert.severity.ERROR),
  unknown_type = ProtoExpert.new("devloc.unknown_type", "Unknown devloc message type",
    expert.group.UNDECODED, expert.severity.WARN),
  auth_mismatch = ProtoExpert.new("devloc.auth_mismatch", "Session authentication present/absent against the catalog",
    expert.group.PROTOCOL, expert.severity.WARN),
}
devloc.experts = { ef.malformed, ef.unknown_type, ef.auth_mismatch }

local cbor_dissector = Dissector.get("cbor")

-- CBOR reading. Every function takes (tvb, offset, limit) and never reads at or past `limit`;
-- errors are returned (nil, reason), never raised, so a hostile datagram cannot stop tshark.

-- A float, so that hi * TWO32 stays float arithmetic (Lua 5.4 integers would wrap).
local TWO32 = 4294967296.0
local UINT32_MAX = 4294967295

-- One CBOR head at `off`. Returns major type, argument (a Lua number; exact below 2^53), head
-- length, and the argument's high and low 32-bit words; or nil and a reason.
local function read_head(tvb, off, limit)
  if off >= limit then return nil, "truncated at byte " .. off end
  local ib = tvb(off, 1):uint()
  local major = math.floor(ib / 32)
  local ai = ib % 32
  if ai < 24 then return major, ai, 1, 0, ai end
  local sizes = { [24] = 1, [25] = 2, [26] = 4, [27] = 8 }
  local n = sizes[ai]
  if n == nil then
    if ai == 31 then return nil, "indefinite length at byte " .. off .. " (devloc refuses it)" end
    return nil, "reserved additional information " .. ai .. " at byte " .. off
  end
  if off + 1 + n > limit then return nil, "truncated head at byte " .. off end
  if n == 8 then
    local hi = tvb(off + 1, 4):uint()
    local lo = tvb(off + 5, 4):uint()
    return major, hi * TWO32 + lo, 9, hi, lo
  end
  local v = tvb(off + 1, n):uint()
  return major, v, 1 + n, 0, v
end

-- Offset just past the item at `off`, or nil and a reason. `budget.items` bounds the work.
local function skip_item(tvb, off, limit, depth, budget)
  if depth > MAX_DEPTH then return nil, "nesting deeper than " .. MAX_DEPTH end
  budget.items = budget.items + 1
  if budget.items > MAX_ITEMS then return nil, "more than " .. MAX_ITEMS .. " items" end
  local major, arg, hlen = read_head(tvb, off, limit)
  if major == nil then return nil, arg end
  local pos = off + hlen
  if major == 0 or major == 1 or major == 7 then
    return pos
  elseif major == 2 or major == 3 then
    if arg > limit - pos then return nil, "string of " .. arg .. " bytes runs past the datagram" end
    return pos + arg
  elseif major == 4 or major == 5 then
    local count = major == 5 and arg * 2 or arg
    if count > limit - pos then return nil, "container of " .. arg .. " items runs past the datagram" end
    for _ = 1, count do
      local nxt, why = skip_item(tvb, pos, limit, depth + 1, budget)
      if nxt == nil then return nil, why end
      pos = nxt
    end
    return pos
  else -- major 6: a tag (devloc sends none, but skip it like a decoder would)
    return skip_item(tvb, pos, limit, depth + 1, budget)
  end
end

local function hex(tvb, off, len)
  return string.lower(tvb(off, len):bytes():tohex())
end

-- A byte string of exactly `want` bytes at `off`: returns content offset and next offset.
local function read_bstr(tvb, off, limit, want, what)
  local major, len, hlen = read_head(tvb, off, limit)
  if major == nil then return nil, what .. ": " .. len end
  if major ~= 2 then return nil, what .. " must be a byte string" end
  if len ~= want then return nil, what .. " must be " .. want .. " bytes, not " .. len end
  if off + hlen + len > limit then return nil, what .. " runs past the datagram" end
  return off + hlen, off + hlen + len
end

local function read_uint(tvb, off, limit, what)
  local major, v, hlen, hi, lo = read_head(tvb, off, limit)
  if major == nil then return nil, what .. ": " .. v end
  if major ~= 0 then return nil, what .. " must be an unsigned integer" end
  return v, off + hlen, hlen, hi, lo
end

-- Names the top-level entries of the body map (key -> field name from the catalog) and, for
-- ERROR, the error code. Returns the error code (or nil) and nil, or nil and a reason.
local function walk_body(tvb, off, limit, type_code, tree)
  local major, count, hlen = read_head(tvb, off, limit)
  if major == nil then return nil, count end
  local names = body_fields[type_code] or {}
  local pos = off + hlen
  local budget = { items = 1 }
  local code
  for _ = 1, count do
    local kmajor, key, khlen = read_head(tvb, pos, limit)
    if kmajor == nil then return nil, "body: " .. key end
    local vstart, why = skip_item(tvb, pos, limit, 2, budget)
    if vstart == nil then return nil, "body: " .. why end
    local vend, why2 = skip_item(tvb, vstart, limit, 2, budget)
    if vend == nil then return nil, "body: " .. why2 end
    local label
    if kmajor == 0 then
      label = (names[key] or "unknown") .. " (key " .. key .. ")"
      if type_code == ERROR_TYPE and key == 1 then
        local vmajor, v = read_head(tvb, vstart, limit)
        if vmajor == 0 then code = v end
      end
    else
      label = "non-integer key"
    end
    tree:add(f.field, tvb(pos, vend - pos), label)
    pos = vend
  end
  return code
end

local function malformed(tvb, pinfo, tree, reason)
  tree:add_proto_expert_info(ef.malformed, "Malformed devloc datagram: " .. reason)
  pinfo.cols.info:set("DEVLOC [Malformed: " .. reason .. "]")
  return tvb:len()
end

function devloc.dissector(tvb, pinfo, tree)
  local limit = tvb:len()
  if limit == 0 then return 0 end
  pinfo.cols.protocol:set("DEVLOC")
  local subtree = tree:add(devloc, tvb(), "devloc Locator Protocol")
  if limit > MAX_DATAGRAM then
    subtree:add_proto_expert_info(ef.malformed, "datagram of " .. limit .. " bytes exceeds " .. MAX_DATAGRAM)
  end

  -- [version, type, rid, body (, auth)]
  local major, count, hlen = read_head(tvb, 0, limit)
  if major == nil then return malformed(tvb, pinfo, subtree, "envelope: " .. count) end
  if major ~= 4 or count < 4 or count > 5 then
    return malformed(tvb, pinfo, subtree, "envelope must be an array of 4 or 5 items")
  end
  local pos = hlen

  local version, vnext, vhlen = read_uint(tvb, pos, limit, "version")
  if version == nil then return malformed(tvb, pinfo, subtree, vnext) end
  if version > UINT32_MAX then return malformed(tvb, pinfo, subtree, "version out of range") end
  local vitem = subtree:add(f.version, tvb(pos, vhlen), version)
  if version ~= PROTOCOL_VERSION then vitem:append_text(" (unsupported)") end
  pos = vnext

  local type_code, tnext, thlen = read_uint(tvb, pos, limit, "type")
  if type_code == nil then return malformed(tvb, pinfo, subtree, tnext) end
  if type_code > UINT32_MAX then return malformed(tvb, pinfo, subtree, "message type out of range") end
  local type_name = message_types[type_code]
  local titem = subtree:add(f.type, tvb(pos, thlen), type_code)
  if type_name == nil then
    type_name = string.format("UNKNOWN_0x%02x", type_code)
    titem:add_proto_expert_info(ef.unknown_type, "Message type " .. type_code .. " is not in the catalog")
  end
  titem:set_text(string.format("Message type: %s (0x%02x)", type_name, type_code))
  subtree:add(f.type_name, tvb(pos, thlen), type_name)
  subtree:append_text(", " .. type_name)
  pos = tnext

  local rid_at, rnext = read_bstr(tvb, pos, limit, REQUEST_ID_BYTES, "request ID")
  if rid_at == nil then return malformed(tvb, pinfo, subtree, rnext) end
  subtree:add(f.rid, tvb(rid_at, REQUEST_ID_BYTES))
  local info = "DEVLOC " .. type_name .. " rid=" .. hex(tvb, rid_at, REQUEST_ID_BYTES)
  pinfo.cols.info:set(info)
  pos = rnext

  local bmajor = read_head(tvb, pos, limit)
  if bmajor ~= 5 then return malformed(tvb, pinfo, subtree, "body must be a map") end
  local body_end, why = skip_item(tvb, pos, limit, 1, { items = 0 })
  if body_end == nil then return malformed(tvb, pinfo, subtree, "body: " .. why) end
  local body_item = subtree:add(f.body, tvb(pos, body_end - pos))
  body_item:set_text("Body (" .. (body_end - pos) .. " bytes)")
  local code, bwhy = walk_body(tvb, pos, body_end, type_code, body_item)
  if bwhy ~= nil then return malformed(tvb, pinfo, subtree, bwhy) end
  if type_code == ERROR_TYPE then
    if code == nil then return malformed(tvb, pinfo, subtree, "ERROR body has no code (key 1)") end
    local ename = error_codes[code] or string.format("UNKNOWN_ERROR_%.0f", code)
    if code <= UINT32_MAX then subtree:add(f.error_code, tvb(pos, body_end - pos), code) end
    subtree:add(f.error_name, tvb(pos, body_end - pos), ename)
    info = info .. " code=" .. ename
  end
  local body_at, body_len = pos, body_end - pos
  pos = body_end

  if count == 5 then
    local amajor, acount, ahlen = read_head(tvb, pos, limit)
    if amajor == nil then return malformed(tvb, pinfo, subtree, "auth: " .. acount) end
    if amajor ~= 4 or acount ~= 3 then
      return malformed(tvb, pinfo, subtree, "auth must be [sid(16), seq, mac(16)]")
    end
    local auth_start = pos
    pos = pos + ahlen
    local sid_at, snext = read_bstr(tvb, pos, limit, SESSION_ID_BYTES, "session ID")
    if sid_at == nil then return malformed(tvb, pinfo, subtree, snext) end
    local seq_at = snext
    local seq, qnext, qhlen, hi, lo = read_uint(tvb, seq_at, limit, "sequence number")
    if seq == nil then return malformed(tvb, pinfo, subtree, qnext) end
    local mac_at, mnext = read_bstr(tvb, qnext, limit, MAC_BYTES, "MAC")
    if mac_at == nil then return malformed(tvb, pinfo, subtree, mnext) end
    local atree = subtree:add(f.auth, tvb(auth_start, mnext - auth_start))
    atree:set_text("Session authentication")
    atree:add(f.sid, tvb(sid_at, SESSION_ID_BYTES))
    atree:add(f.seq, tvb(seq_at, qhlen), UInt64.new(lo, hi))
    atree:add(f.mac, tvb(mac_at, MAC_BYTES))
    info = info .. " sid=" .. hex(tvb, sid_at, SESSION_ID_BYTES) .. " seq=" .. string.format("%.0f", seq)
    pos = mnext
    if message_auth[type_code] ~= nil and message_auth[type_code] ~= "session" and type_code ~= ERROR_TYPE then
      atree:add_proto_expert_info(ef.auth_mismatch, type_name .. " takes no session authentication")
    end
  elseif message_auth[type_code] == "session" then
    subtree:add_proto_expert_info(ef.auth_mismatch, type_name .. " requires session authentication")
  end

  if pos ~= limit then
    return malformed(tvb, pinfo, subtree, (limit - pos) .. " trailing bytes after the envelope")
  end

  -- Wireshark's CBOR dissector shows the body's items; it may rewrite the columns, so set ours
  -- afterwards.
  if cbor_dissector ~= nil then
    cbor_dissector:call(tvb(body_at, body_len):tvb(), pinfo, body_item)
  end
  pinfo.cols.protocol:set("DEVLOC")
  pinfo.cols.info:set(info)
  return limit
end

local udp_port = DissectorTable.get("udp.port")
for port, _ in pairs(default_ports) do
  udp_port:add(port, devloc)
end

-- Heuristic: peer traffic (PUNCH, DATA and their answers between terminals) and servers on
-- other ports travel on ports nobody registered. Claim a UDP datagram on any port only if it is
-- a well-formed devloc envelope as a devloc sender produces it (devloc-protocol(7), ENCODING
-- and ENVELOPE): at most MAX_DATAGRAM bytes; 0x84 or 0x85 (array of 4 or 5); version 0x01;
-- the type in its shortest encoding (one byte below 24, else 0x18 and the byte) and in the
-- catalog; 0x48 and an 8-byte request ID; a body map that reads to its end within the bounds;
-- for 5 items exactly [0x50 sid(16), seq, 0x50 mac(16)], and only on session messages or ERROR
-- (4 items never on a session message); no trailing byte. Anything else is left to other
-- dissectors, so a random datagram (DNS, QUIC, RTP, ...) is not claimed.
local function looks_like_devloc(tvb)
  local limit = tvb:len()
  if limit < 12 or limit > MAX_DATAGRAM then return false end
  local first = tvb(0, 1):uint()
  if first ~= 0x84 and first ~= 0x85 then return false end
  if tvb(1, 1):uint() ~= PROTOCOL_VERSION then return false end
  local pos = 2
  local type_code = tvb(pos, 1):uint()
  if type_code == 0x18 then
    type_code = tvb(pos + 1, 1):uint()
    if type_code < 24 then return false end -- not the shortest form
    pos = pos + 2
  elseif type_code < 24 then
    pos = pos + 1
  else
    return false
  end
  local auth = message_auth[type_code]
  if auth == nil then return false end
  if first == 0x85 and auth ~= "session" and type_code ~= ERROR_TYPE then return false end
  if first == 0x84 and auth == "session" then return false end
  if pos + 1 + REQUEST_ID_BYTES > limit or tvb(pos, 1):uint() ~= 0x40 + REQUEST_ID_BYTES then return false end
  pos = pos + 1 + REQUEST_ID_BYTES
  local bmajor = read_head(tvb, pos, limit)
  if bmajor ~= 5 then return false end
  local body_end = skip_item(tvb, pos, limit, 1, { items = 0 })
  if body_end == nil then return false end
  pos = body_end
  if first == 0x85 then
    -- 0x83, 0x50 + 16 bytes, a uint, 0x50 + 16 bytes: the MAC is the datagram's last 16 bytes.
    if pos + 2 + SESSION_ID_BYTES > limit then return false end
    if tvb(pos, 1):uint() ~= 0x83 or tvb(pos + 1, 1):uint() ~= 0x40 + SESSION_ID_BYTES then return false end
    pos = pos + 2 + SESSION_ID_BYTES
    local seq, after = read_uint(tvb, pos, limit, "seq")
    if seq == nil then return false end
    pos = after
    if pos + 1 + MAC_BYTES ~= limit or tvb(pos, 1):uint() ~= 0x40 + MAC_BYTES then return false end
    pos = limit
  end
  return pos == limit
end

local function heuristic(tvb, pinfo, tree)
  if not looks_like_devloc(tvb) then return false end
  devloc.dissector(tvb, pinfo, tree)
  return true
end
-- Enabled by default; Analyze > Enabled Protocols (devloc, its UDP heuristic) turns it off.
devloc:register_heuristic("udp", heuristic)
