-- Keeps a project's job lock for the job its worker still holds the claim of: renews
-- it while it names this job, takes it again if it expired, and leaves it alone if
-- another job holds it (the project moved on while this worker was silent).
--
-- KEYS[1] the lock  progress:{<project>}:job
-- ARGV[1] the job id   ARGV[2] TTL in seconds
-- Returns 1 if the lock names this job now, 0 if another job holds it.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
