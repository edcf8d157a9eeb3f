-- Asks the project's job to stop: marks the job holding the project's lock as
-- cancelled, in one atomic step with reading the lock, so a cancel never marks a job
-- that was settled meanwhile (nor the next job of the project). The job's worker reads
-- the mark between provider calls (a job still waiting is ended by the worker that
-- takes it, before any call); settling the job removes it (claim.lua).
--
-- Touches keys of the stream's slot only (both are tagged {progress:jobs}).
-- KEYS[1] the project's lock  {progress:jobs}:lock:<project>
-- KEYS[2] cancelled jobs  {progress:jobs}:cancelled (hash: job id -> unix ms)
-- ARGV[1] now (unix ms)
-- Returns the id of the job marked, or '' when the project has no job.
local lock, cancelled = KEYS[1], KEYS[2]
local now = ARGV[1]

local job_id = redis.call('GET', lock)
if not job_id then
  return ''
end
redis.call('HSETNX', cancelled, job_id, now)
return job_id
