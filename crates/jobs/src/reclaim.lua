-- Takes over one job whose worker stopped showing life (idle for at least the claim
-- idle time), and says which claim the taker now holds.
--
-- Touches the stream's key only (one hash slot).
-- KEYS[1] the job stream  progress:jobs
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] minimum idle time (ms)   ARGV[4] cursor
-- ARGV[5] the latest time (Unix ms, the sender's clock) at which this may still run
-- Returns {next cursor} when nothing was idle that long (or the call came too late),
-- else {next cursor, entry id, delivery count, field, value, field, value, ...}.
local stream, group = KEYS[1], ARGV[1]

-- A call that waited in a frozen or cut-off server runs when it thaws, when every job
-- looks stale because no worker could renew its claim: it must not take anything then.
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[5]) then
  return { ARGV[4] }
end

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
