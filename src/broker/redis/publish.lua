-- The hub's publish path, as ONE atomic step: append the event to the project's history,
-- update its state, and PUBLISH the frame carrying its id. Either all happens or none.
--
-- Arguments, in order: `PublishArgs` in layout.rs writes them, the names below read
-- them (the Python SDK packages this very file and passes the same order).
--
-- Returns the event id, '<epoch>:<seq>'.

local history, state, receipt = KEYS[1], KEYS[2], KEYS[3]
  -- history: the stream  progress:{<p>}:history  (entries 0-<seq>, field "frame")
  -- state:   the hash    progress:{<p>}:state    (epoch, seq, progress, status, ...)
  -- receipt: the string  progress:{<p>}:pub:<key> (the id this publish got)
local channel = ARGV[1]         -- progress:<p> (one node, as legacy publishers use it);
                                -- progress:{<p>} on a cluster (the project's slot)
local new_epoch = ARGV[2]       -- used only if the history does not exist (new, or lost)
local max_len = ARGV[3]         -- history length kept (events)
local active_ttl = ARGV[4]      -- TTL in seconds while the job runs
local retention_ttl = ARGV[5]   -- TTL in seconds after `complete`
local event = ARGV[6]           -- the event name
local head, mid, tail = ARGV[7], ARGV[8], ARGV[9]
                                -- the frame: head .. id .. mid .. ["progress":N] .. tail
local asked_progress = ARGV[10] -- the progress asked for, or '' (none)
local progress_floor = ARGV[11] -- what the state's progress is raised to, or ''
                                -- (complete -> 100)
local changes = { status = ARGV[12], current_stage = ARGV[13],
                  estimated_remaining = ARGV[14], youtube_url = ARGV[15] }
                                -- '' = unchanged, '=' .. value = set ('=' alone: null)
local updated_at = ARGV[16]
local job = ARGV[17]            -- the generation job of the event ('' = none); recorded
                                -- with `complete` so a job never completes twice
local publish = ARGV[18]        -- 'PUBLISH' (one node) or 'SPUBLISH' (a cluster: sharded
                                -- Pub/Sub, delivered by the shard that owns the slot)
local claim = tonumber(ARGV[19])
  -- The fencing token of the job's claim the event is published under (with `job`; it
  -- grows with every claim of the job). The state keeps the newest one seen for the
  -- job (fence_job, fence); an event under an older claim, or any event of a job whose
  -- `complete` is in (ended_job), is refused with a STALE error, so a worker that
  -- stalled and lost its job can neither write into the run of the worker that took it
  -- over nor complete it a second time.
local max_bytes = tonumber(ARGV[20])
  -- Bytes of frames the history keeps (nil: no byte bound, as a publisher older than
  -- this argument sends). The state's `bytes` field counts what the stream holds (a
  -- history written before it undercounts until its older entries are trimmed).

-- A retried publish (its reply was lost, e.g. in an outage) must not append twice:
-- the receipt says it already happened, and with which id.
local done = redis.call('GET', receipt)
if done then return done end

local epoch = redis.call('HGET', state, 'epoch')
if not epoch or redis.call('EXISTS', history) == 0 then
  -- A new history (first event, or the old one was lost): a new epoch, so no client can
  -- resume into it believing it is the old one.
  epoch = new_epoch
  redis.call('DEL', history, state)
  redis.call('HSET', state, 'epoch', epoch, 'seq', 0, 'progress', 0)
end

-- Lost writes (issue 23 §2). KEYS[4], when given (one node), is the node's era
-- (`progress:era`, see broker/redis/era.rs): the run_id of the Redis incarnation the
-- hubs last found running. A history written under another era may lack writes whose
-- ids were handed out (a restart from an older save): it is begun anew in a new epoch,
-- keeping the state's facts and fences, so no id repeats within an epoch and a resume
-- from before is `recovered: false`. A state with no era yet (new, or written by a
-- publisher that does not pass the key) takes the current one. Reads: the era and the
-- state's era (and its seq, once per new era).
if KEYS[4] then
  local era = redis.call('GET', KEYS[4])
  local seen = redis.call('HGET', state, 'era')
  if era and seen ~= era then
    if seen and redis.call('HGET', state, 'seq') ~= '0' then
      epoch = new_epoch
      redis.call('DEL', history)
      redis.call('HSET', state, 'epoch', epoch, 'seq', 0, 'bytes', 0)
    end
    redis.call('HSET', state, 'era', era)
  end
end

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
-- Runs (issue 23 §1). A run ends with `complete`; the next event starts a new one, and
-- an accepted job's QUEUED update (ARGV[21] its job, ARGV[22] its place) starts one
-- whatever came before. A new run keeps nothing of the last: progress from 0, and its
-- status, stage, ETA, link, job and place gone. A QUEUED of a job whose run has begun
-- (a claim of it published: a worker was quicker) or ended is refused as STALE.
local queued_job, queue_position = ARGV[21] or '', ARGV[22] or ''
if changes.status == '=QUEUED' and queued_job ~= '' then
  local fenced = redis.call('HMGET', state, 'fence_job', 'ended_job')
  if fenced[1] == queued_job or fenced[2] == queued_job then
    return redis.error_reply('STALE job ' .. queued_job .. ' has already begun')
  end
end
if changes.status == '=QUEUED' or ((status == 'COMPLETED' or status == 'FAILED') and event ~= 'complete') then
  max = 0
  redis.call('HSET', state, 'progress', 0)
  redis.call('HDEL', state, 'youtube_url', 'job_id', 'queue_position', 'status', 'current_stage', 'estimated_remaining')
  if queued_job ~= '' then redis.call('HSET', state, 'job_id', queued_job) end
  if queue_position ~= '' then redis.call('HSET', state, 'queue_position', queue_position) end
end

-- Progress never goes backwards within a run: a lower value is clamped up.
local progress = ''
if asked_progress ~= '' then
  local p = tonumber(asked_progress)
  if p < max then p = max end
  max = p
  progress = '"progress":' .. string.format('%d', p)
  redis.call('HSET', state, 'progress', p)
end
if progress_floor ~= '' then
  local floor = tonumber(progress_floor)
  if floor > max then redis.call('HSET', state, 'progress', floor) end
end

local seq = redis.call('HINCRBY', state, 'seq', 1)
local id = epoch .. ':' .. seq
local frame = head .. id .. mid .. progress .. tail
redis.call('XADD', history, '0-' .. seq, 'frame', frame)
-- Beyond the count or the bytes the oldest go (the newest always stays): a project's
-- history costs at most max_bytes, whatever its events weigh. Usually one step.
local bytes = redis.call('HINCRBY', state, 'bytes', #frame)
local len = redis.call('XLEN', history)
max_len = tonumber(max_len)
while len > max_len or (max_bytes and bytes > max_bytes and len > 1) do
  local oldest = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)[1]
  if not oldest then break end
  local fields = oldest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'frame' then bytes = bytes - #fields[i + 1] end
  end
  redis.call('XDEL', history, oldest[1])
  len = len - 1
end
if bytes < 0 then bytes = 0 end
redis.call('HSET', state, 'bytes', bytes)

for _, name in ipairs({ 'status', 'current_stage', 'estimated_remaining', 'youtube_url' }) do
  local v = changes[name]
  if v ~= '' then redis.call('HSET', state, name, string.sub(v, 2)) end
end
redis.call('HSET', state, 'last_event_id', id, 'updated_at', updated_at)
if event == 'complete' and job ~= '' then
  redis.call('HSET', state, 'job_id', job, 'ended_job', job)
end

local ttl = active_ttl
if event == 'complete' then ttl = retention_ttl end
redis.call('EXPIRE', history, ttl)
redis.call('EXPIRE', state, ttl)

redis.call('SET', receipt, id, 'EX', 600)
if publish ~= 'SPUBLISH' then publish = 'PUBLISH' end
redis.call(publish, channel, frame)
return id
