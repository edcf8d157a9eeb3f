-- Takes over one job whose worker stopped showing life (idle for at least the claim
-- idle time), and says which claim the taker now holds.
--
-- Touches the stream's key only (one hash slot).
-- KEYS[1] the job stream  progress:jobs
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] minimum idle time (ms)   ARGV[4] cursor
-- Returns {next cursor} when nothing was idle that long, else
-- {next cursor, entry id, delivery count, field, value, field, value, ...}.
local stream, group = KEYS[1], ARGV[1]

local claimed = redis.call('XAUTOCLAIM', stream, group, ARGV[2], ARGV[3], ARGV[4], 'COUNT', 1)
local reply = { claimed[1] }
local entry = claimed[2][1]
if entry then
  local id = entry[1]
  -- XAUTOCLAIM counted this delivery; the count now names the taker's claim.
  local pending = redis.call('XPENDING', stream, group, id, id, 1)[1]
  reply[2] = id
  reply[3] = tostring(pending[4])
  for _, v in ipairs(entry[2] or {}) do
    reply[#reply + 1] = v
  end
end
return reply
