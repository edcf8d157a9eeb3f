-- Tells a stalled run to the webhook outbox ONCE, whichever hub's stall scan saw it
-- first (broker/redis/stall.rs), in one atomic step: only while the run's last event is
-- still the one the scan saw silent (it did not publish meanwhile), only while a hub
-- keeps the outbox, and only if no hub told this stall yet (the marker, holding the
-- reason told and living as long as the state; a stall told `silent` is told again
-- when its worker turns out lost, `worker_lost`, never the other way). Appends `webhook_type`, `stall_reason`, the channel, then the
-- state's fields, as publish.lua appends a run's end.
--
-- Returns 1 when appended, 0 when not.

local state, outbox, told = KEYS[1], KEYS[2], KEYS[3]
local last, channel, reason = ARGV[1], ARGV[2], ARGV[3]

if redis.call('HGET', state, 'last_event_id') ~= last then return 0 end
if redis.call('EXISTS', outbox) == 0 then return 0 end
local ttl = redis.call('PTTL', state)
if ttl < 1000 then ttl = 1000 end
local was = redis.call('GET', told)
if was == reason or was == 'worker_lost' then return 0 end
redis.call('SET', told, reason, 'PX', ttl)
redis.call('XADD', outbox, '*', 'webhook_type', 'job.stalled', 'stall_reason', reason,
  'channel', channel, unpack(redis.call('HGETALL', state)))
return 1
