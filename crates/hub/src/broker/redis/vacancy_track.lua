-- Adds projects a hub's watchers watch to the set the hubs' vacancy scan reads
-- (broker/redis/vacancy.rs), but only while a hub that sends `project.vacated` keeps
-- its marker alive: a deployment without that webhook keeps no such set.
--
-- KEYS[1]: the marker  progress-hub:{vacancy}:on  (set by the scanning hubs, expiring)
-- KEYS[2]: the set     progress-hub:{vacancy}:watched  (project ids)
-- ARGV: the project ids.
--
-- Returns how many were new in the set (0 when the marker is absent).

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('SADD', KEYS[2], unpack(ARGV))
