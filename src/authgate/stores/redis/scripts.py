"""Lua scripts of the Redis stores: the store-epoch check, nonce consumption, GCRA limits.

Each runs as one atomic step on the server; the comment above each names its ``KEYS``,
``ARGV`` and reply. The store epoch itself is described in the package docstring.
"""

from __future__ import annotations

# Shared Lua: the store-epoch check of every nonce script (KEYS[2] the epoch key, ARGV[1]
# now_ms, ARGV[3] signed_at_ms). The marker is "<epoch_ms>:<replid>[:r]": the start of the
# data set, and the replication id of the server that wrote it. A server's replication id
# changes whenever its data may be older than what clients have seen: it restarts (from
# nothing, an RDB snapshot or an AOF), or a replica is promoted. So a marker that is missing
# (flush, restart without persistence) or that was written under another replication id
# (restart, failover) is moved forward to now before any nonce is accepted here: anything
# signed earlier may have been spent in the data that was lost. The epoch never moves
# backwards. ":r" records that this history has had a replica: from then on a nonce counts
# only once a replica acknowledges it (see RedisConnection.run_acked), and ``replicated``
# tells the caller so (scripts add 4 to their code).
_EPOCH_LUA = """
local replicated = false
local function check_epoch()
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%x+)') or ''
  local replicas = tonumber(string.match(info, 'connected_slaves:(%d+)') or '0')
  local marker = redis.call('GET', KEYS[2])
  local at, written_by, flag
  if marker then
    at, written_by, flag = string.match(marker, '^(%d+):?(%x*):?(r?)$')
  end
  if at and written_by == replid then
    replicated = flag == 'r' or replicas > 0
    if replicated and flag ~= 'r' then
      redis.call('SET', KEYS[2], at .. ':' .. replid .. ':r')
    end
    return tonumber(at)
  end
  local epoch = tonumber(ARGV[1])
  if at and tonumber(at) > epoch then
    epoch = tonumber(at)
  end
  replicated = replicas > 0
  local suffix = ''
  if replicated then
    suffix = ':r'
  end
  redis.call('SET', KEYS[2], string.format('%d', epoch) .. ':' .. replid .. suffix)
  return epoch
end
local function signed_before_epoch()
  return tonumber(ARGV[3]) < check_epoch()
end
local function coded(code)
  if replicated then
    return code + 4
  end
  return code
end
"""

# KEYS[1] unused (same slot as KEYS[2]), KEYS[2] epoch key; ARGV[1] now_ms. Brings the marker
# up to date (see _EPOCH_LUA) and returns the epoch: run at start-up, so a credential's first
# request is judged against a marker that already exists.
EPOCH_PRIME_SCRIPT = (
    _EPOCH_LUA
    + """
return check_epoch()
"""
)

# Shared Lua: a nonce key whose value (``held``) is ARGV[4], the random token of this
# store call, was written by this very call. redis-py re-sends a script once after a
# connection error (topology.py); when the first send ran and only its reply was lost, the
# retry finds the nonce set. That is the call's own write: it answers fresh again rather
# than refuse its own request as a replay, and applies no side effect twice (the audit
# entry, the rate-limit charges). It writes the key again, same token, so that a WAIT sent
# after it on this connection (RedisConnection.run_acked) counts the replicas holding it:
# WAIT is defined over the writes of its own connection, and the first write was made on
# the one that was lost. Any other call holds another token: a replay, as before.
_OWN_WRITE_LUA = """
local function own_write(held)
  if held ~= ARGV[4] then
    return false
  end
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
  return true
end
"""

# KEYS[1] nonce key, KEYS[2] epoch key (same slot); ARGV now_ms, ttl_ms, signed_at_ms, the
# call's token (stored as the key's value, see _OWN_WRITE_LUA).
# Optional KEYS[3] audit list (same slot: its stream is the nonce's scope) with ARGV[5]
# the JSON entry and ARGV[6] the cap; appended only when the nonce is fresh.
# Returns 0 fresh, 1 replayed, 2 signed before the epoch (the nonce is then left unspent),
# plus 4 when a replica must acknowledge the write (see _EPOCH_LUA). The call's own write
# is fresh even if the epoch has moved since (a failover that kept it): it is held here.
NONCE_CONSUME_SCRIPT = (
    _EPOCH_LUA
    + _OWN_WRITE_LUA
    + """
local before = signed_before_epoch()
if not before and redis.call('SET', KEYS[1], ARGV[4], 'NX', 'PX', ARGV[2]) then
  if KEYS[3] then
    redis.call('LPUSH', KEYS[3], ARGV[5])
    redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
  end
  return coded(0)
end
if own_write(redis.call('GET', KEYS[1])) then
  return coded(0)
end
if before then
  return coded(2)
end
return coded(1)
"""
)

# KEYS[1] rate-limit key; ARGV now_ms, limit, period_ms, cost.
# Mirrors authgate.stores.memory.gcra() operation for operation, its 0.5 ms tolerance
# (GCRA_TOLERANCE_MS) included (Lua numbers are the same
# IEEE doubles as Python floats); the TAT is stored with 17 significant digits so it
# round-trips exactly. Returns {allowed, remaining, retry_after_ms, reset_after_ms}.
GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local interval = period / limit
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored), now)
end
local new_tat = tat + interval * cost
local allow_at = new_tat - period
if allow_at > now + 0.5 then
  local remaining = math.max(0, math.floor((period - (tat - now) + 0.5) / interval))
  return {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local remaining = math.max(0, math.floor((period - (new_tat - now) + 0.5) / interval))
local ttl = math.max(1, math.ceil(new_tat) - now + 1)
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', string.format('%d', ttl))
return {1, remaining, 0, math.ceil(new_tat - now)}
"""

# Shared Lua: GCRA over a run of KEYS, all or nothing, with gcra()'s arithmetic. Each
# decision is {allowed, remaining, retry_after_ms, reset_after_ms, new_tat, key}.
_GCRA_MANY_LUA = """
local function gcra_many(now, first, count, argbase)
  local decided = {}
  local ok = true
  for i = 0, count - 1 do
    local key = KEYS[first + i]
    local limit = tonumber(ARGV[argbase + 2 * i])
    local period = tonumber(ARGV[argbase + 2 * i + 1])
    local interval = period / limit
    local tat = now
    local stored = redis.call('GET', key)
    if stored then
      tat = math.max(tonumber(stored), now)
    end
    local new_tat = tat + interval
    local allow_at = new_tat - period
    if allow_at > now + 0.5 then
      ok = false
      local remaining = math.max(0, math.floor((period - (tat - now) + 0.5) / interval))
      decided[i + 1] = {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now), new_tat, key}
    else
      local remaining = math.max(0, math.floor((period - (new_tat - now) + 0.5) / interval))
      decided[i + 1] = {1, remaining, 0, math.ceil(new_tat - now), new_tat, key}
    end
  end
  return ok, decided
end
local function commit(now, decided)
  for _, d in ipairs(decided) do
    local ttl = math.max(1, math.ceil(d[5]) - now + 1)
    redis.call('SET', d[6], string.format('%.17g', d[5]), 'PX', string.format('%d', ttl))
  end
end
local function flatten(code, decided)
  local out = {code}
  for _, d in ipairs(decided) do
    table.insert(out, d[1])
    table.insert(out, d[2])
    table.insert(out, d[3])
    table.insert(out, d[4])
  end
  return out
end
"""

# KEYS: rate-limit keys (one slot); ARGV[1] now_ms, then limit, period_ms per key.
# Returns {1 if all admitted else 0, then allowed, remaining, retry, reset per key}.
GCRA_MANY_SCRIPT = (
    _GCRA_MANY_LUA
    + """
local now = tonumber(ARGV[1])
local ok, decided = gcra_many(now, 1, #KEYS, 2)
if ok then
  commit(now, decided)
  return flatten(1, decided)
end
return flatten(0, decided)
"""
)

# Shared Lua: each limit of a run of KEYS as it stands, charging nothing (entries shaped as
# gcra_many's). After the charge of an admitted request this is what gcra_many reported for
# it: the same now (ARGV[1]) and the stored TAT its new_tat, unless others charged since.
_GCRA_STANDING_LUA = """
local function standing(now, first, count, argbase)
  local stood = {}
  for i = 0, count - 1 do
    local limit = tonumber(ARGV[argbase + 2 * i])
    local period = tonumber(ARGV[argbase + 2 * i + 1])
    local interval = period / limit
    local tat = now
    local stored = redis.call('GET', KEYS[first + i])
    if stored then
      tat = math.max(tonumber(stored), now)
    end
    local remaining = math.max(0, math.floor((period - (tat - now) + 0.5) / interval))
    stood[i + 1] = {1, remaining, 0, math.ceil(tat - now), tat, KEYS[first + i]}
  end
  return stood
end
"""

# KEYS[1] nonce, KEYS[2] epoch, KEYS[3] audit list, KEYS[4..] rate-limit keys (one slot).
# ARGV[1] now_ms, [2] ttl_ms, [3] signed_at_ms, [4] the call's token (the key's value, see
# _OWN_WRITE_LUA), [5] audit JSON, [6] audit cap (0: none), then limit, period_ms per
# rate-limit key. The limits are charged, and the nonce spent, only when the nonce is fresh
# and every limit admits the request; the call's own earlier write (a retry) is fresh again,
# charged and audited once, reporting its limits as they stand.
# Returns {code, then allowed, remaining, retry, reset per key}; code 0 fresh,
# 1 replayed, 2 before the epoch, 3 rate limited (nonce left unspent); plus 4 as above.
NONCE_LIMIT_SCRIPT = (
    _EPOCH_LUA
    + _OWN_WRITE_LUA
    + _GCRA_MANY_LUA
    + _GCRA_STANDING_LUA
    + """
local now = tonumber(ARGV[1])
local before = signed_before_epoch()
local held = redis.call('GET', KEYS[1])
if held then
  if own_write(held) then
    return flatten(coded(0), standing(now, 4, #KEYS - 3, 7))
  end
  if before then
    return {coded(2)}
  end
  return {coded(1)}
end
if before then
  return {coded(2)}
end
local ok, decided = gcra_many(now, 4, #KEYS - 3, 7)
if not ok then
  return flatten(coded(3), decided)
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
commit(now, decided)
local cap = tonumber(ARGV[6])
if cap > 0 then
  redis.call('LPUSH', KEYS[3], ARGV[5])
  redis.call('LTRIM', KEYS[3], 0, cap - 1)
end
return flatten(coded(0), decided)
"""
)


# KEYS[1] pair failure key (a sorted set of failure times); ARGV now_ms, window_ms, a unique
# member, the most failures kept. Forgets failures older than the window, records this
# one, keeps the key only as long as its newest failure counts; returns the count.
PAIR_FAILURE_SCRIPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
"""
