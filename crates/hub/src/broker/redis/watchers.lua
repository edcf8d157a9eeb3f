-- How many watch a project now across every hub: the sum of the hubs' entries in the
-- project's presence hash (see presence.lua) that are not past their time. Reads only.
--
-- KEYS[1]: the hash  progress:{<p>}:watchers  (hub instance -> "<watchers>:<until>").

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local entries = redis.call('HGETALL', KEYS[1])
local sum = 0
for i = 1, #entries, 2 do
  local count, til = string.match(entries[i + 1], '^(%d+):(%d+)$')
  if count and tonumber(til) > now then sum = sum + tonumber(count) end
end
return sum
