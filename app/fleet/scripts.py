"""The Lua scripts of the fleet's store (app.fleet.store): each step of a job's life that touches
more than one key, or reads before it writes, runs in Redis as one atomic script.

A job's generation is the id of its message in the jobs stream: the record (`msg`) names the one
message that may start it, and each of its events carries it (`g`), so a reader of a job never
takes a later job of the same id for it. A message of an earlier generation of the same id
(cancelled, handed back, or finished before the id was used again) finds its job ended or
another generation current, and is dropped without touching the record: an id's messages,
records and webhooks are one-to-one by construction. A record without `msg` (written before
generations) takes any.

The finished jobs Redis keeps are bounded in count and bytes (FLEET_HISTORY_MAX and _MB): three
keys account for them, the oldest is dropped first, and a queued or running job never is.
"""

from __future__ import annotations

from app.fleet.order import WAIT_IN_LINE

# KEYS (history): the finished jobs by finish time (zset), their sizes (hash), the sum (string).
FORGET = """
local function forget(history, sizes, total, key)
  local bytes = redis.call('HGET', sizes, key)
  if bytes then
    redis.call('HDEL', sizes, key)
    redis.call('DECRBY', total, bytes)
  end
  redis.call('ZREM', history, key)
end
"""

# Records a job's outcome, once. KEYS: job hash, events stream, owners of the id, the owner's
# active jobs, then the three history keys. ARGV: status, type, data json, error json ('' on
# success), ttl seconds, now, ended channel, job key, owner ('' none), generation, the most
# finished jobs kept, their most bytes, the prefix of job hashes, of event streams.
# The result is the terminal event's data; the owners' index of the id expires with the last
# of its jobs to end; past the history's bounds the oldest finished jobs are dropped.
END = (
    FORGET
    + """
local function keep(key, bytes)
  local history, sizes, total, now = KEYS[5], KEYS[6], KEYS[7], tonumber(ARGV[6])
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', history, '-inf', now - tonumber(ARGV[5]))) do
    forget(history, sizes, total, old)  -- expired by now
  end
  redis.call('ZADD', history, now, key)
  redis.call('HSET', sizes, key, bytes)
  redis.call('INCRBY', total, bytes)
  while redis.call('ZCARD', history) > tonumber(ARGV[11])
      or tonumber(redis.call('GET', total) or '0') > tonumber(ARGV[12]) do
    local oldest = redis.call('ZRANGE', history, 0, 0)[1]
    if oldest == key then break end  -- the job that just ended is always kept
    if redis.call('HEXISTS', ARGV[13] .. oldest, 'done') == 1 then
      redis.call('DEL', ARGV[13] .. oldest, ARGV[14] .. oldest)
    end
    forget(history, sizes, total, oldest)
  end
end

local function finish()
  if redis.call('HSETNX', KEYS[1], 'done', '1') == 0 then return 0 end
  local n = redis.call('XLEN', KEYS[2]) + 1
  local g = redis.call('HGET', KEYS[1], 'msg') or ''
  redis.call('XADD', KEYS[2], '*', 'n', n, 'type', ARGV[2], 'data', ARGV[3], 'g', g)
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', ARGV[6])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  if ARGV[9] ~= '' then
    redis.call('SREM', KEYS[4], ARGV[8])
    redis.call('HSET', KEYS[3], ARGV[9], '0')
    local live = false
    for _, state in ipairs(redis.call('HVALS', KEYS[3])) do
      if state == '1' then live = true end
    end
    if not live then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
  end
  keep(ARGV[8], redis.call('HSTRLEN', KEYS[1], 'spec') + #ARGV[3] + #ARGV[4])
  redis.call('PUBLISH', ARGV[7], ARGV[8])
  return 1
end
"""
)

# The outcome of the generation ARGV[10] ('' any): 0 when another generation is current. KEYS[8]:
# the jobs stream; ARGV[15]: the group when the job has no webhooks to wait for (its message is
# acknowledged here, as ACK would), else ''; ARGV[16]: the recording consumer, told 1 again when
# it asks again (its answer was lost); from ARGV[17], by threes, the job's events not stored yet
# (type, data json, progress json or ''), added first as APPEND would (while that consumer runs it).
FINISH = (
    END
    + """
local state = redis.call('HMGET', KEYS[1], 'msg', 'done', 'gateway', 'recorder')
if ARGV[10] ~= '' and state[1] and state[1] ~= ARGV[10] then return 0 end
if state[2] then return (state[4] == ARGV[16] and ARGV[16] ~= '') and 1 or 0 end
if redis.call('EXISTS', KEYS[1]) == 1 and (not state[3] or state[3] == ARGV[16]) then
  local n = redis.call('XLEN', KEYS[2])
  for i = 17, #ARGV, 3 do
    n = n + 1
    redis.call('XADD', KEYS[2], '*', 'n', n, 'type', ARGV[i], 'data', ARGV[i + 1], 'g', ARGV[10])
    if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[i + 2]) end
  end
end
local recorded = finish()
if recorded == 1 and ARGV[16] ~= '' then redis.call('HSET', KEYS[1], 'recorder', ARGV[16]) end
if recorded == 1 and ARGV[15] ~= '' and ARGV[10] ~= '' then
  redis.call('HSET', KEYS[1], 'delivered', '1')
  redis.call('XACK', KEYS[8], ARGV[15], ARGV[10])
  redis.call('XDEL', KEYS[8], ARGV[10])
end
return recorded
"""
)

# Interrupt a job. KEYS and ARGV[1..14] as END (ARGV[10] unused), then KEYS[8]: jobs stream,
# KEYS[9]: waiting set; ARGV[15]: group, ARGV[16]: cancel channel. A job no gateway has started
# ends here, its message leaves the stream (and the waiting set) with it, and the caller delivers
# its webhooks: {1, spec}. One that runs is signalled to its gateway: {2}. {0}: no such job, or
# it has ended.
CANCEL = (
    END
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'done') == 1 then
  return {0}
end
local state = redis.call('HMGET', KEYS[1], 'status', 'gateway', 'msg', 'spec')
if state[1] == 'queued' and not state[2] then
  finish()
  redis.call('HSET', KEYS[1], 'delivered', '1')
  redis.call('ZREM', KEYS[9], ARGV[8])
  if state[3] then
    redis.call('XACK', KEYS[8], ARGV[15], state[3])
    redis.call('XDEL', KEYS[8], state[3])
  end
  return {1, state[4]}
end
redis.call('PUBLISH', ARGV[16], ARGV[8])
return {2}
"""
)

# KEYS: job hash, events stream, jobs stream, owners of the id, the owner's active jobs, then the
# three history keys, then the waiting set. ARGV: spec json, queued event data, now, job key,
# owner ('' none), max_jobs (0: no limit), the prefix of job hashes, '1' when the job has
# webhooks, its priority, QUEUE_AGE_STEP_S, the group, the consumer of the accepting gateway
# when it has a free ComfyUI ('' when not), the queued channel. The job waits at its rank
# (app.fleet.order); when it is next in line and the accepting gateway is free, that gateway
# takes and starts it here, as PULL would: {1, message id, 1} (which start this is).
# Returns {1, message id} queued, its key told on the queued channel (gateways with room pull);
# {0, 0} when a job with this key is still queued or running; {3, 0} when it ended but its
# webhooks have not gone out yet (a takeover still needs its record); {2, n} when the owner has
# n >= max_jobs jobs queued or running already.
ENQUEUE = (
    FORGET
    + WAIT_IN_LINE
    + """
local owner, most = ARGV[5], tonumber(ARGV[6])
if owner ~= '' and most > 0 then
  local have = 0
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local job = ARGV[7] .. key
    if redis.call('EXISTS', job) == 0 or redis.call('HEXISTS', job, 'done') == 1 then
      redis.call('SREM', KEYS[5], key)  -- ended without being taken off (never, unless edited)
    else
      have = have + 1
    end
  end
  if have >= most then return {2, have} end
end
local state = redis.call('HMGET', KEYS[1], 'status', 'hooks', 'delivered')
local status = state[1]
if status and status ~= 'succeeded' and status ~= 'failed' and status ~= 'interrupted' then
  return {0, 0}
end
if status and state[2] == '1' and state[3] ~= '1' then return {3, 0} end
redis.call('DEL', KEYS[1], KEYS[2])
forget(KEYS[6], KEYS[7], KEYS[8], ARGV[4])
local id = redis.call('XADD', KEYS[3], '*', 'key', ARGV[4])
local rank = rank_of(id, tonumber(ARGV[9]), tonumber(ARGV[10]))
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'status', 'queued', 'created', ARGV[3],
           'progress', '{"value":0,"max":0,"node":null}', 'msg', id, 'hooks', ARGV[8],
           'priority', ARGV[9], 'rank', rank)
wait_in_line(KEYS[3], KEYS[9], ARGV[11], ARGV[4], id, rank, tonumber(ARGV[10]))
redis.call('XADD', KEYS[2], '*', 'n', 1, 'type', 'queued', 'data', ARGV[2], 'g', id)
if owner ~= '' then
  redis.call('SADD', KEYS[5], ARGV[4])
  redis.call('HSET', KEYS[4], owner, '1')
  redis.call('PERSIST', KEYS[4])
end
if ARGV[12] ~= '' and redis.call('ZRANGE', KEYS[9], 0, 0)[1] == ARGV[4] then
  redis.call('ZREM', KEYS[9], ARGV[4])
  redis.call('XCLAIM', KEYS[3], ARGV[11], ARGV[12], 0, id, 'JUSTID')
  redis.call('HSET', KEYS[1], 'gateway', ARGV[12])
  return {1, id, redis.call('HINCRBY', KEYS[1], 'attempts', 1)}
end
redis.call('PUBLISH', ARGV[13], ARGV[4])
return {1, id}
"""
)

# KEYS: job hash, jobs stream. ARGV: group, consumer, message id. A gateway starts the job of a
# message it holds: which start it is (1: the first); 0 when another gateway holds the message
# now (taken over); -1 when there is nothing to start (the job ended, or another generation of
# the id is current): the message is only to be acknowledged.
START = """
local held = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[3], ARGV[3], 1)[1]
if not held or held[2] ~= ARGV[2] then return 0 end
local state = redis.call('HMGET', KEYS[1], 'msg', 'done')
if redis.call('EXISTS', KEYS[1]) == 0 or state[2] then return -1 end
if state[1] and state[1] ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'gateway', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""

# KEYS: job hash, events stream. ARGV: type, data json, status ('' keeps it), progress json,
# changed channel, job key, generation, consumer. Only the gateway that started the current
# generation adds events, and none once the job has ended.
APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local state = redis.call('HMGET', KEYS[1], 'done', 'msg', 'gateway')
if state[1] or (state[2] and state[2] ~= ARGV[7]) or (state[3] and state[3] ~= ARGV[8]) then
  return 0
end
local n = redis.call('XLEN', KEYS[2]) + 1
redis.call('XADD', KEYS[2], '*', 'n', n, 'type', ARGV[1], 'data', ARGV[2], 'g', ARGV[7])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
"""

# KEYS: jobs stream. ARGV: group, consumer, message ids. Resets the idle time of the jobs this
# consumer still holds; returns those another gateway has taken over meanwhile.
HEARTBEAT = """
local lost = {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# KEYS: jobs stream, job hash. ARGV: group, message id. Done with a message: its job's webhooks
# went out (marked on the record only if the message is its current generation's).
ACK = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  local current = redis.call('HGET', KEYS[2], 'msg')
  if not current or current == ARGV[2] then redis.call('HSET', KEYS[2], 'delivered', '1') end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: jobs stream, job hash, waiting set. ARGV: group, message id, job key, consumer,
# QUEUE_AGE_STEP_S, the queued channel. A job handed back is queued again as a new message, its
# new generation, at its place (its rank as first queued), its key told on the queued channel;
# only by the gateway that holds the message, and only while its job has not ended. 1 if queued
# again.
RELEASE = (
    WAIT_IN_LINE
    + """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)[1]
if not held or held[2] ~= ARGV[4] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local state = redis.call('HMGET', KEYS[2], 'msg', 'done')
if redis.call('EXISTS', KEYS[2]) == 0 or state[2] or (state[1] and state[1] ~= ARGV[2]) then
  return 0
end
local id = redis.call('XADD', KEYS[1], '*', 'key', ARGV[3])
local age_step = tonumber(ARGV[5])
local rank = redis.call('HGET', KEYS[2], 'rank') or rank_of(id, 0, age_step)
redis.call('HSET', KEYS[2], 'msg', id, 'status', 'queued')
redis.call('HDEL', KEYS[2], 'gateway')
wait_in_line(KEYS[1], KEYS[3], ARGV[1], ARGV[3], id, rank, age_step)
redis.call('PUBLISH', ARGV[6], ARGV[3])
return 1
"""
)

# One request from an API key's bucket of requests_per_minute, as GCRA keeps it: KEYS[1] holds
# when the bucket is next full (µs, Redis's own clock, so the gateways' clocks do not matter).
# ARGV: the interval between requests, the burst. Returns 0 when the request may go, else the
# µs until it may.
RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local full_at = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + interval
local over = full_at - now - tonumber(ARGV[2]) * interval
if over > 0 then return over end
local ttl_ms = math.ceil((full_at - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', full_at), 'PX', ttl_ms)
return 0
"""
