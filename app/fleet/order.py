"""The fleet's queue order: which job a gateway with a free ComfyUI takes next, in Redis.

Every job's message stays in the jobs stream (its generation, what KEDA and the queue's depth
count), but a gateway no longer reads the stream in order: a job no gateway has taken waits in
the sorted set `<name>:waiting`, scored by its rank (app.core.priority: higher priority first, a
waiting job gaining 1 per QUEUE_AGE_STEP_S, from the time in its message id, Redis's own clock),
while its message is held by the consumer `~queued`, which never runs anything. A gateway takes
the lowest score and claims that job's message from `~queued` in one script; from there the
message is held, heartbeated, taken over and acknowledged as before (app.fleet.stream).
"""

from __future__ import annotations

# The consumer that holds the messages of waiting jobs (no gateway's name: those are host-pid-
# suffix, and a host name has no `~`); the scripts below name it as this.
QUEUED = "~queued"

# Shared by ENQUEUE and RELEASE (app.fleet.scripts): the message just added to the jobs stream
# goes to `~queued`, and its job to the waiting set. Messages queued by a gateway of an earlier
# version (never handed to `~queued`) are handed over and queued by their time, at priority 0.
WAIT_IN_LINE = """
local function rank_of(message_id, priority, age_step)
  -- The id's sequence orders jobs queued in one millisecond: FIFO within a priority (a tie
  -- would go by the job's key). Written in full: a double holds it, `%.6f` did not.
  local ms, seq = string.match(message_id, '^(%d+)-(%d+)')
  local at_ms = tonumber(ms) + math.min(tonumber(seq), 999) / 1000
  return string.format('%.17g', at_ms / 1000 / age_step - priority)
end

local function wait_in_line(stream, waiting, group, key, message_id, rank, age_step)
  redis.pcall('XGROUP', 'CREATE', stream, group, '0')  -- Redis came back empty
  local got = redis.call('XREADGROUP', 'GROUP', group, '~queued', 'COUNT', 1000,
                         'STREAMS', stream, '>')
  if got then
    for _, message in ipairs(got[1][2]) do
      local fields = message[2]
      if message[1] ~= message_id and fields[1] == 'key' then
        redis.call('ZADD', waiting, 'NX', rank_of(message[1], 0, age_step), fields[2])
      end
    end
  end
  redis.call('ZADD', waiting, rank, key)
end
"""

# KEYS: waiting set, jobs stream. ARGV: group, consumer, the prefix of job hashes, the most
# starts a job may have had (JOB_MAX_ATTEMPTS; 0: start none here). The job with the lowest
# rank, its message claimed from `~queued` by this consumer: {message id, job key, the job's
# hash before this start (HGETALL's list), which start this is (as START answers; 0: not
# started here, for app.fleet.admit to settle)}; {'', ''} when none waits. The message is the
# job's current one (its `msg`).
PULL = """
local group, consumer = ARGV[1], ARGV[2]
local fresh = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
                         'STREAMS', KEYS[2], '>')
if fresh and fresh[1][2][1] then  -- queued by a gateway of an earlier version
  local message = fresh[1][2][1]
  return {message[1], message[2][2] or ''}
end
for _ = 1, 100 do
  local best = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not best then break end
  redis.call('ZREM', KEYS[1], best)
  local message_id = redis.call('HGET', ARGV[3] .. best, 'msg')
  if message_id then
    local held = redis.call('XPENDING', KEYS[2], group, message_id, message_id, 1)[1]
    if held and held[2] == '~queued' then
      redis.call('XCLAIM', KEYS[2], group, consumer, 0, message_id, 'JUSTID')
      local job = ARGV[3] .. best
      local state = redis.call('HGETALL', job)
      local ended_and_starts = redis.call('HMGET', job, 'done', 'attempts')
      local started = 0
      if not ended_and_starts[1]
          and tonumber(ended_and_starts[2] or '0') < tonumber(ARGV[4] or '0') then
        redis.call('HSET', job, 'gateway', consumer)  -- as START does
        started = redis.call('HINCRBY', job, 'attempts', 1)
      end
      return {message_id, best, state, started}
    end
  end  -- ended or taken meanwhile: not waiting any more
end
return {'', ''}
"""

# KEYS: jobs stream. ARGV: group, consumer, idle ms. A message some gateway (never `~queued`)
# held without heartbeating for idle ms, claimed by this consumer: {message id, job key}, or
# {} when there is none.
RECLAIM = """
local group, consumer, idle = ARGV[1], ARGV[2], ARGV[3]
for _, holder in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do
  local name = holder[2]
  if name ~= '~queued' then
    for _, entry in ipairs(redis.call('XPENDING', KEYS[1], group, 'IDLE', idle, '-', '+', 10,
                                      name)) do
      local got = redis.call('XCLAIM', KEYS[1], group, consumer, idle, entry[1])
      if got[1] and got[1][2] then return {got[1][1], got[1][2][2] or ''} end
      redis.call('XACK', KEYS[1], group, entry[1])  -- its entry was deleted: nothing to run
    end
  end
end
return {}
"""
