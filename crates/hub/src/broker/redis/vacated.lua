-- Tells a project vacated (`project.vacated`) to the webhook outbox ONCE per vacancy,
-- whichever hub's vacancy scan (broker/redis/vacancy.rs) looks first, in one atomic step
-- on the project's own keys:
--
-- - it counts the project's live watchers over every hub (presence.lua's entries that
--   are not past their time; those past it, of hubs that died, are dropped): any, and
--   the project is watched (its vacancy, if one began, is over);
-- - none: the vacancy began when the scan first found none (the key, `<ms>`); once it
--   lasted `grace`, the project is told and the key says `told` until a watcher comes
--   back (presence.lua deletes it as a hub writes a new entry), so a second scan, of
--   this hub or another, tells nothing more.
--
-- KEYS[1]: progress:{<p>}:watchers   KEYS[2]: progress:{<p>}:vacancy
-- KEYS[3]: progress:{<p>}:state      KEYS[4]: the outbox
-- KEYS[5]: the scan's set of watched projects (the project leaves it once told; in
--          this same step, so a watcher's hub that adds it back after writing its
--          entry is never undone)
-- ARGV: the project's channel, its id, the grace (ms).
--
-- Returns 0: watched, or not vacant long enough (the scan looks again); 1: told now;
-- 2: told before (either way the scan stops looking until a watcher comes back).

local watchers, vacancy, state, outbox, watched = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, project, grace = ARGV[1], ARGV[2], tonumber(ARGV[3])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local entries = redis.call('HGETALL', watchers)
local sum = 0
for i = 1, #entries, 2 do
  local count, til = string.match(entries[i + 1], '^(%d+):(%d+)$')
  if count and tonumber(til) > now then
    sum = sum + tonumber(count)
  else
    redis.call('HDEL', watchers, entries[i])
  end
end
if sum > 0 then
  redis.call('DEL', vacancy)
  return 0
end

local keep = math.max(grace * 4, 3600000)
local since = redis.call('GET', vacancy)
if since == 'told' then
  redis.call('SREM', watched, project)
  return 2
end
if not since then
  redis.call('SET', vacancy, now, 'PX', keep)
  since = now
end
since = tonumber(since) or now
if now - since < grace then return 0 end

redis.call('SET', vacancy, 'told', 'PX', keep)
redis.call('SREM', watched, project)
redis.call('XADD', outbox, '*', 'webhook_type', 'project.vacated', 'vacant_since', since,
  'channel', channel, unpack(redis.call('HGETALL', state)))
return 1
