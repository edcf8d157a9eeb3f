-- One claim on a pending job entry, checked and acted on in one atomic step: the
-- action happens only while the entry is still pending for this claim. Another worker
-- may have reclaimed it (XAUTOCLAIM) from a worker that stalled; that worker's
-- keep-alive, settle or hand-back must then change nothing.
--
-- A claim is a consumer and a delivery count: XREADGROUP hands an entry out with
-- count 1, each reclaim adds one, and the keep-alive's XCLAIM JUSTID leaves it as it
-- is. So a reclaim by the same consumer (its own stalled run) is a new claim too.
--
-- Touches keys of the stream's slot only (the others are tagged {progress:jobs}).
-- KEYS[1] the job stream  progress:jobs
-- KEYS[2] the job's project lock  {progress:jobs}:lock:<project>
-- KEYS[3] what the job finished  {progress:jobs}:done:<job id>
-- KEYS[4] unsettled jobs per client  {progress:jobs}:clients (hash)
-- KEYS[5] cancelled jobs  {progress:jobs}:cancelled (hash, see cancel.lua)
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] entry id   ARGV[4] delivery count
-- ARGV[5] action: 'renew' (reset the idle time), 'settle' (XACK and XDEL, and free the
--         project, the job's record and its cancel mark: the job is over), 'hand_back' (queue the job
--         again as a new entry, then settle this one; lock and record stay with the
--         job), or 'record' (store what the job finished so far)
-- ARGV[6] the job (hand_back) or what it finished (record), as JSON
-- ARGV[7] the job id   ARGV[8] the job's client ('' if none)
-- Returns {1, consumer} if the claim held and the action was done; {0, holder} if not,
-- where holder is the consumer holding the entry now ('' when it is no longer pending).
local stream, lock, done, clients, cancelled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, entry, job_id, client = ARGV[1], ARGV[2], ARGV[3], ARGV[7], ARGV[8]

local pending = redis.call('XPENDING', stream, group, entry, entry, 1)[1]
if not pending or pending[2] ~= consumer or pending[4] ~= tonumber(ARGV[4]) then
  return { 0, pending and pending[2] or '' }
end

local action = ARGV[5]
if action == 'renew' then
  redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID')
elseif action == 'settle' then
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  redis.call('DEL', done)
  redis.call('HDEL', cancelled, job_id)
  if redis.call('GET', lock) == job_id then
    redis.call('DEL', lock)
  end
  if client ~= '' and redis.call('HINCRBY', clients, client, -1) <= 0 then
    redis.call('HDEL', clients, client)
  end
elseif action == 'record' then
  redis.call('SET', done, ARGV[6])
elseif action == 'hand_back' then
  redis.call('XADD', stream, '*', 'job', ARGV[6])
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
else
  return redis.error_reply('unknown claim action ' .. tostring(action))
end
return { 1, consumer }
