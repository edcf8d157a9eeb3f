-- A client's new projects (issue 23 §6), as ONE atomic step on the client's own key, so
-- the bound holds across every hub of the deployment: may the client create `project`
-- now? Called only for a project with no state (the hub looks first).
--
-- KEYS[1]: the sorted set  progress:creations:{<client>}  (project -> when it was created,
--          ms of Redis's clock), expiring with its newest member.
-- ARGV: the project, the window (ms: the active TTL, the longest a project lives with no
--       other event), the most projects of the window (0: no bound), the most new
--       projects in any minute (0: no bound).
--
-- Returns {0, 0} when admitted (the project is recorded), else {limit, wait}: limit 1 =
-- the count, 2 = the rate; wait = ms until a place frees.

local key = KEYS[1]
local project = ARGV[1]
local window = tonumber(ARGV[2])
local max_count = tonumber(ARGV[3])
local per_minute = tonumber(ARGV[4])
local minute = 60000

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
-- Created by this client within the window (its keys lost since): counted already.
if redis.call('ZSCORE', key, project) then return {0, 0} end

if max_count > 0 and redis.call('ZCARD', key) >= max_count then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {1, tonumber(oldest[2]) + window - now}
end
if per_minute > 0 then
  local since = '(' .. (now - minute)
  if redis.call('ZCOUNT', key, since, '+inf') >= per_minute then
    local first = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    return {2, tonumber(first[2]) + minute - now}
  end
end

redis.call('ZADD', key, now, project)
redis.call('PEXPIRE', key, window)
return {0, 0}
