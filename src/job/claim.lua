-- One claim on a pending job entry, checked and acted on in one atomic step: the
-- action happens only while the entry is still pending for this claim. Another worker
-- may have reclaimed it (XAUTOCLAIM) from a worker that stalled; that worker's
-- keep-alive, settle or hand-back must then change nothing.
--
-- A claim is a consumer and a delivery count: XREADGROUP hands an entry out with
-- count 1, each reclaim adds one, and the keep-alive's XCLAIM JUSTID leaves it as it
-- is. So a reclaim by the same consumer (its own stalled run) is a new claim too.
--
-- Touches the stream's key only (one hash slot).
-- KEYS[1] the job stream  progress:jobs
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] entry id   ARGV[4] delivery count
-- ARGV[5] action: 'renew' (reset the idle time), 'settle' (XACK and XDEL), or
--         'hand_back' (queue the job again as a new entry, then settle this one)
-- ARGV[6] the job (hand_back only)
-- Returns {1, consumer} if the claim held and the action was done; {0, holder} if not,
-- where holder is the consumer holding the entry now ('' when it is no longer pending).
local stream, group, consumer, entry = KEYS[1], ARGV[1], ARGV[2], ARGV[3]

local pending = redis.call('XPENDING', stream, group, entry, entry, 1)[1]
if not pending or pending[2] ~= consumer or pending[4] ~= tonumber(ARGV[4]) then
  return { 0, pending and pending[2] or '' }
end

local action = ARGV[5]
if action == 'renew' then
  redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID')
elseif action == 'settle' then
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
elseif action == 'hand_back' then
  redis.call('XADD', stream, '*', 'job', ARGV[6])
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
else
  return redis.error_reply('unknown claim action ' .. tostring(action))
end
return { 1, consumer }
