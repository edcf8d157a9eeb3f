-- The hub's publish path, as ONE atomic step: append the event to the project's history,
-- update its state, and PUBLISH the frame carrying its id. Either all happens or none.
--
-- KEYS[1]  history stream  progress:{<project>}:history   (entries 0-<seq>, field "frame")
-- KEYS[2]  state hash      progress:{<project>}:state     (epoch, seq, progress, status, ...)
-- KEYS[3]  publish receipt progress:{<project>}:pub:<key> (the id this publish got)
-- ARGV[1]  channel         progress:<project>  (the channel legacy publishers use too);
--          on a Redis Cluster progress:{<project>}, the project's slot (see ARGV[18])
-- ARGV[2]  a fresh epoch, used only if the history does not exist (new, or lost)
-- ARGV[3]  history length kept (MAXLEN)
-- ARGV[4]  TTL in seconds while the job runs
-- ARGV[5]  TTL in seconds after `complete` (retention)
-- ARGV[6]  event name
-- ARGV[7..9]  frame template: head .. id .. mid .. ["progress":N] .. tail
-- ARGV[10] progress asked for, or '' (none)
-- ARGV[11] progress floor the state is raised to, or '' (complete → 100)
-- ARGV[12..15] status, current_stage, estimated_remaining, youtube_url:
--          '' = unchanged, '=' .. value = set (an empty value means null)
-- ARGV[16] updated_at
-- ARGV[17] the generation job this event belongs to ('' = none); recorded with
--          `complete` so a job that is picked up again never completes twice
-- ARGV[18] the publish command: 'PUBLISH' (one node) or 'SPUBLISH' (a cluster: sharded
--          Pub/Sub, delivered by the shard that owns the slot only)
-- ARGV[19] the fencing token of the job's claim the event is published under (with
--          ARGV[17]; it grows with every claim of the job). The state keeps the newest one seen for the
--          job (fence_job, fence); an event under an older claim, or any event of a
--          job whose `complete` is in (ended_job), is refused with a STALE error, so a worker that
--          stalled and lost its job can neither write into the run of the worker that
--          took it over nor complete it a second time.
-- Returns the event id, '<epoch>:<seq>'.

local history, state, receipt = KEYS[1], KEYS[2], KEYS[3]

-- A retried publish (its reply was lost, e.g. in an outage) must not append twice:
-- the receipt says it already happened, and with which id.
local done = redis.call('GET', receipt)
if done then return done end

local epoch = redis.call('HGET', state, 'epoch')
if not epoch or redis.call('EXISTS', history) == 0 then
  -- A new history (first event, or the old one was lost): a new epoch, so no client can
  -- resume into it believing it is the old one.
  epoch = ARGV[2]
  redis.call('DEL', history, state)
  redis.call('HSET', state, 'epoch', epoch, 'seq', 0, 'progress', 0)
end

local event = ARGV[6]
local job, claim = ARGV[17], tonumber(ARGV[19])
if job ~= '' and claim then
  -- ended_job outlives the next run's reset (job_id does not): a stalled worker of the
  -- previous job stays refused after a new job has started.
  if redis.call('HGET', state, 'ended_job') == job then
    return redis.error_reply('STALE job ' .. job .. ' has already completed')
  end
  if redis.call('HGET', state, 'fence_job') == job then
    local fence = tonumber(redis.call('HGET', state, 'fence')) or 0
    if claim < fence then
      return redis.error_reply('STALE claim ' .. claim .. ' of job ' .. job .. ' was superseded by claim ' .. fence)
    end
  end
  redis.call('HSET', state, 'fence_job', job, 'fence', claim)
end
local status = redis.call('HGET', state, 'status')
local max = tonumber(redis.call('HGET', state, 'progress') or '0') or 0
if (status == 'COMPLETED' or status == 'FAILED') and event ~= 'complete' then
  -- The previous run ended: a new run starts from 0.
  max = 0
  redis.call('HSET', state, 'progress', 0)
  redis.call('HDEL', state, 'youtube_url', 'job_id')
end

-- Progress never goes backwards within a run: a lower value is clamped up.
local progress = ''
if ARGV[10] ~= '' then
  local p = tonumber(ARGV[10])
  if p < max then p = max end
  max = p
  progress = '"progress":' .. string.format('%d', p)
  redis.call('HSET', state, 'progress', p)
end
if ARGV[11] ~= '' then
  local floor = tonumber(ARGV[11])
  if floor > max then redis.call('HSET', state, 'progress', floor) end
end

local seq = redis.call('HINCRBY', state, 'seq', 1)
local id = epoch .. ':' .. seq
local frame = ARGV[7] .. id .. ARGV[8] .. progress .. ARGV[9]
redis.call('XADD', history, 'MAXLEN', ARGV[3], '0-' .. seq, 'frame', frame)

local fields = { 'status', 'current_stage', 'estimated_remaining', 'youtube_url' }
for i, name in ipairs(fields) do
  local v = ARGV[11 + i]
  if v ~= '' then redis.call('HSET', state, name, string.sub(v, 2)) end
end
redis.call('HSET', state, 'last_event_id', id, 'updated_at', ARGV[16])
if event == 'complete' and ARGV[17] ~= '' then
  redis.call('HSET', state, 'job_id', ARGV[17], 'ended_job', ARGV[17])
end

local ttl = ARGV[4]
if event == 'complete' then ttl = ARGV[5] end
redis.call('EXPIRE', history, ttl)
redis.call('EXPIRE', state, ttl)

redis.call('SET', receipt, id, 'EX', 600)
local publish = 'PUBLISH'
if ARGV[18] == 'SPUBLISH' then publish = 'SPUBLISH' end
redis.call(publish, ARGV[1], frame)
return id
