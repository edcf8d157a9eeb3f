-- Queues a job unless its project already has one, queued or running, or a limit is
-- reached: takes the project's lock, adds the job's entry and counts it for its client,
-- in one atomic step. The lock has no expiry: it lives exactly as long as the job
-- (settling the job in claim.lua releases it), so a job that waits in the queue for an
-- hour still holds its project.
--
-- Touches keys of the stream's slot only (the others are tagged {progress:jobs}).
-- KEYS[1] the job stream  progress:jobs
-- KEYS[2] the project's lock  {progress:jobs}:lock:<project>
-- KEYS[3] unsettled jobs per client  {progress:jobs}:clients (hash)
-- ARGV[1] the job id   ARGV[2] the job (JSON)   ARGV[3] its client ('' if none)
-- ARGV[4] most unsettled jobs per client   ARGV[5] most waiting jobs   ARGV[6] group
-- Returns {1, position} when queued (1: no job waited before it); {0, holder} when the
-- project has a job already; {-1, ''} at the client's limit; {-2, ''} when full.
local stream, lock, clients = KEYS[1], KEYS[2], KEYS[3]
local job_id, job, client = ARGV[1], ARGV[2], ARGV[3]
local max_per_client, max_waiting, group = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

local holder = redis.call('GET', lock)
if holder then
  return { 0, holder }
end
if client ~= '' and tonumber(redis.call('HGET', clients, client) or '0') >= max_per_client then
  return { -1, '' }
end
-- Waiting: entries not yet handed to a worker (every entry is pending once taken,
-- until it is settled and deleted).
local waiting = redis.call('XLEN', stream) - redis.call('XPENDING', stream, group)[1]
if waiting >= max_waiting then
  return { -2, '' }
end
redis.call('SET', lock, job_id)
redis.call('XADD', stream, '*', 'job', job)
if client ~= '' then
  redis.call('HINCRBY', clients, client, 1)
end
return { 1, tostring(waiting + 1) }
