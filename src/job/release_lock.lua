-- Releases a project's job lock only if it still names this job (another job may
-- have taken the project since).
-- KEYS[1] the lock  progress:{<project>}:job      ARGV[1] the job id
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
