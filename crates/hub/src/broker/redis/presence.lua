-- A hub's number of watchers of one project (presence), as ONE atomic step on the
-- project's own key, so every hub of the deployment sums the same entries and a hub
-- that stops refreshing its entry (it died) drops out on its own.
--
-- KEYS[1]: the hash  progress:{<p>}:watchers  (hub instance -> "<watchers>:<until>",
--          until = ms of Redis's clock after which the entry no longer counts),
--          expiring with its longest-lived entry.
-- KEYS[2]: the project's vacancy  progress:{<p>}:vacancy  (vacated.lua): deleted when
--          this hub's entry is new (a watcher came back: a next vacancy is a new one).
-- ARGV: the hub's instance, its number of watchers now (0: none; its entry goes),
--       the entry's time to live (ms).
--
-- Drops every entry past its time (hubs that died) on the way, when the hash holds other
-- hubs' entries. Returns the number of entries left.

local key = KEYS[1]
local instance = ARGV[1]
local watchers = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if watchers > 0 then
  if redis.call('HSET', key, instance, watchers .. ':' .. (now + ttl)) == 1 and KEYS[2] then
    redis.call('DEL', KEYS[2])
  end
else
  redis.call('HDEL', key, instance)
end

-- This hub's entry alone (one hub, the usual case): it sets the key's time; no read.
local count = redis.call('HLEN', key)
if count == 0 then return 0 end
if count == 1 and watchers > 0 then
  redis.call('PEXPIREAT', key, now + ttl)
  return 1
end

-- Other hubs' entries too: those past their time go, the key lives until the latest.
local entries = redis.call('HGETALL', key)
local latest, left = 0, 0
for i = 1, #entries, 2 do
  local til = tonumber(string.match(entries[i + 1], ':(%d+)$')) or 0
  if til <= now then
    redis.call('HDEL', key, entries[i])
  else
    left = left + 1
    if til > latest then latest = til end
  end
end
if latest > 0 then redis.call('PEXPIREAT', key, latest) end
return left
