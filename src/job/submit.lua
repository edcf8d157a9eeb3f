-- Queues a job unless its project already has one, queued or running: takes the
-- project's lock and adds the job's entry in one atomic step. The lock has no expiry:
-- it lives exactly as long as the job (settling the job in claim.lua releases it), so
-- a job that waits in the queue for an hour still holds its project.
--
-- Touches keys of the stream's slot only (the lock is tagged {progress:jobs}).
-- KEYS[1] the job stream  progress:jobs
-- KEYS[2] the project's lock  {progress:jobs}:lock:<project>
-- ARGV[1] the job id   ARGV[2] the job (JSON)
-- Returns {1, ''} when queued; {0, holder} when the project has a job already.
local stream, lock = KEYS[1], KEYS[2]
local job_id, job = ARGV[1], ARGV[2]

local holder = redis.call('GET', lock)
if holder then
  return { 0, holder }
end
redis.call('SET', lock, job_id)
redis.call('XADD', stream, '*', 'job', job)
return { 1, '' }
