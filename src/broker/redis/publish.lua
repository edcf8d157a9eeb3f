-- The hub's publish path, as ONE atomic step: append the event to the project's history,
-- update its state, and PUBLISH the frame carrying its id. Either all happens or none.
--
-- Its inputs are described once, by name, in contract/publish-inputs.json (KEYS in the
-- order listed there; ARGV as name/value pairs). Every publisher builds its call from
-- that file (the hub: broker/redis/publish_inputs.rs; the Python SDK: _redis.py), and
-- tests/contract.rs fails when this script reads a name the file does not list.
-- The script knows nothing of the product's state fields: the publisher sends them as
-- a patch (inputs named `state.<field>`), which the script writes as given.
--
-- Returns the event id, '<epoch>:<seq>'.

local history, state, receipt, fences, units = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local era_key, outbox, running = KEYS[6], KEYS[7], KEYS[8]

local PATCH = 'state.'
-- The unkeyed receipts the state remembers (`receipts`: 'r=id ' each), in bytes: the
-- last 8 publishes at least (a publisher's receipt is 16 characters, an id about 20).
local RECEIPTS_KEPT = 400

local input, patch = {}, {}
for i = 1, #ARGV, 2 do
  local name = ARGV[i]
  if string.find(name, PATCH, 1, true) == 1 then
    patch[#patch + 1] = string.sub(name, #PATCH + 1)
    patch[#patch + 1] = ARGV[i + 1]
  else
    input[name] = ARGV[i + 1]
  end
end
local max_len, max_bytes = tonumber(input.max_len), tonumber(input.max_bytes)
local active_ttl, retention_ttl = tonumber(input.active_ttl), tonumber(input.retention_ttl)
if not (max_len and max_bytes and active_ttl and retention_ttl and input.head
    and input.mid and input.tail and input.channel and input.new_epoch and input.receipt) then
  return redis.error_reply('ERR publish.lua: an input of contract/publish-inputs.json is missing')
end

-- A retried publish (its reply was lost, e.g. in an outage) must not append twice:
-- its receipt says it already happened, and with which id. A caller's idempotency key
-- (`keyed`) is remembered 10 minutes in its own key; any other receipt among the last
-- few publishes of the project, in the state (a publisher retries one publish at a
-- time, at once), at no cost of a key per publish.
local keyed = input.keyed == '1'
if keyed then
  local done = redis.call('GET', receipt)
  if done then return done end
end

-- Every field this publish reads, in one read.
local s = redis.call('HMGET', state, 'epoch', 'seq', 'progress', 'bytes', 'run_ended', 'era',
  'fence_holder', 'fence_token', 'fence_ended', 'receipts', 'units_done', 'units_total')
local epoch, seq = s[1], tonumber(s[2]) or 0
local max, bytes = tonumber(s[3]) or 0, tonumber(s[4]) or 0
local was_epoch, was_max = epoch, s[3]
local run_ended, seen_era = s[5], s[6]
local fence_holder, fence_token, fence_ended = s[7], tonumber(s[8]) or 0, s[9]
local receipts = s[10] or ''
local units_done, units_total = tonumber(s[11] or ''), tonumber(s[12] or '')
local out = {}  -- fields written at the end, in one HSET: name, value, ...

if not keyed then
  local mark = input.receipt .. '='
  local at = string.find(' ' .. receipts, ' ' .. mark, 1, true)
  if at then
    local from = at + #mark
    return string.sub(receipts, from, string.find(receipts, ' ', from, true) - 1)
  end
end

-- XLEN is 0 for no history: an existing one always keeps its newest event.
local len = redis.call('XLEN', history)
if not epoch or len == 0 then
  -- A new history (first event, or the old one was lost): a new epoch, so no client can
  -- resume into it believing it is the old one.
  epoch = input.new_epoch
  redis.call('DEL', history, state)
  seq, max, bytes, run_ended, seen_era, len = 0, 0, 0, nil, nil, 0
  fence_holder, fence_token, fence_ended = nil, 0, nil
  receipts, was_epoch, was_max = '', nil, nil
  units_done, units_total = nil, nil
end

-- Lost writes (issue 23 §2). The era key, when given (one node), holds the node's era
-- (see broker/redis/era.rs): the run_id of the Redis incarnation the hubs last found
-- running. A history written under another era may lack writes whose ids were handed
-- out (a restart from an older save): its next event begins a new epoch, so no id
-- repeats within an epoch. The history is kept and the sequence goes on (the stream's
-- ids `0-<seq>` stay monotonic): a position is in the history only when the entry at
-- its sequence number carries exactly its id (replay.lua), so a resume from an id lost
-- with the writes is `recovered: false`, while one from an id the restart kept (the
-- last events before a shutdown, which a subscriber may not have received) goes on
-- after it, across the epochs, losing nothing. A state with no era yet takes the
-- current one.
if era_key then
  local era = redis.call('GET', era_key)
  if era and seen_era ~= era then
    if seen_era and seq ~= 0 then
      epoch = input.new_epoch
    end
    out[#out + 1] = 'era'; out[#out + 1] = era
  end
end

-- Fences (issue 23 §8). An event published under a fence (a holder, e.g. a job, and its
-- token, which grows with every claim of the holder) is refused with a STALE error when
-- a newer claim of its holder has published, when its holder's run has ended, or when
-- its holder is not the project's current one: every holder the project has seen is
-- kept (the `fences` set), so a stalled worker stays refused however many holders came
-- after it.
--
-- Units (issue 25 §1). A holder's parallel units (e.g. the tasks of a Celery group, each
-- claiming the job anew) publish with their unit (`fence_unit`): a unit's token is
-- compared with its own newest (the `units` hash: unit -> '<token>', '<token> done' once
-- counted done), so a sibling's newer claim does not fence it out, and its own older
-- attempts stay refused. The units hash belongs to the current holder: a new one
-- drops it.
local holder, token = input.fence_holder, tonumber(input.fence_token or '')
local unit = holder and token and input.fence_unit
local unit_was_done = false
if holder and token then
  if fence_ended == holder then
    return redis.error_reply('STALE job ' .. holder .. ' has already completed')
  end
  if fence_holder == holder then
    if unit then
      local entry = redis.call('HGET', units, unit) or ''
      local newest = tonumber(string.match(entry, '^%d+')) or 0
      unit_was_done = string.find(entry, ' done', 1, true) ~= nil
      if token < newest then
        return redis.error_reply('STALE claim ' .. token .. ' of unit ' .. unit .. ' of job ' .. holder .. ' was superseded by claim ' .. newest)
      end
    elseif token < fence_token then
      return redis.error_reply('STALE claim ' .. token .. ' of job ' .. holder .. ' was superseded by claim ' .. fence_token)
    end
  elseif redis.call('SADD', fences, holder) == 0 then
    return redis.error_reply('STALE job ' .. holder .. ' is no longer the project\'s current job')
  else
    redis.call('EXPIRE', fences, math.max(active_ttl, retention_ttl))
    redis.call('DEL', units)
    units_done = nil
  end
  out[#out + 1] = 'fence_holder'; out[#out + 1] = holder
  -- The holder's newest token: a unit's older one (a sibling claimed since) leaves it.
  local newest = token
  if unit and fence_holder == holder and token < fence_token then newest = fence_token end
  out[#out + 1] = 'fence_token'; out[#out + 1] = newest
end

-- A unit done (`unit_done`: N, the units of the run's current stage): counted once per
-- unit, whatever order they finish in and however often one is redelivered; the state
-- and the frame carry units_done and units_total, and the progress asked for is that of
-- k of N done within `unit_progress` ('a b': from a to b).
local units_frame = ''
local n = tonumber(input.unit_done or '')
if unit and n and n > 0 then
  local done = units_done or 0
  if not unit_was_done then done = done + 1 end
  if done > n then done = n end
  units_done, units_total = done, n
  out[#out + 1] = 'units_done'; out[#out + 1] = done
  out[#out + 1] = 'units_total'; out[#out + 1] = n
  local a, b = string.match(input.unit_progress or '', '^(%d+) (%d+)$')
  if a then
    input.progress = tostring(math.floor(tonumber(a) + (tonumber(b) - tonumber(a)) * done / n))
  end
  units_frame = ',"units_done":' .. done .. ',"units_total":' .. n
  redis.call('HSET', units, unit, token .. ' done')
elseif unit then
  local mark = token
  if unit_was_done then mark = token .. ' done' end
  redis.call('HSET', units, unit, mark)
end
if unit then redis.call('EXPIRE', units, math.max(active_ttl, retention_ttl)) end

-- Runs (issue 23 §1). A run ends with an event that ends it (`complete`); the next event
-- starts a new one, and an event that starts one (a QUEUED update) does so whatever came
-- before. A new run keeps nothing of the last but the script's own fields: progress
-- from 0. A run start for a holder that has published already (a worker was quicker) is
-- refused as STALE.
local ends = input.ends_run == '1'
if input.starts_run == '1' or (run_ended and not ends) then
  local starting = input.run_holder
  if starting and starting ~= '' and redis.call('SISMEMBER', fences, starting) == 1 then
    return redis.error_reply('STALE job ' .. starting .. ' has already begun')
  end
  max = 0
  -- The state fields this script keeps itself; a new run forgets every other one.
  local SCRIPT_FIELDS = { epoch = true, seq = true, bytes = true, era = true, progress = true,
    last_event_id = true, run_ended = true, fence_holder = true, fence_token = true,
    fence_ended = true, receipts = true }
  local drop = {}
  for _, field in ipairs(redis.call('HKEYS', state)) do
    if not SCRIPT_FIELDS[field] or field == 'run_ended' then drop[#drop + 1] = field end
  end
  if #drop > 0 then redis.call('HDEL', state, unpack(drop)) end
end

-- Progress never goes backwards within a run: a lower value is clamped up.
local progress = ''
if input.progress then
  local p = tonumber(input.progress)
  if p < max then p = max end
  max = p
  progress = '"progress":' .. string.format('%d', p) .. units_frame
end
local floor = tonumber(input.progress_floor or '')
if floor and floor > max then max = floor end

seq = seq + 1
local id = epoch .. ':' .. seq
local frame = input.head .. id .. input.mid .. progress .. input.tail
-- Beyond the count or the bytes the oldest go (the newest always stays): a project's
-- history costs at most max_bytes, whatever its events weigh. Each that goes is read
-- first, for its bytes; the XADD's exact MAXLEN then drops them. Usually one.
local cut, after = 0, '-'
while len - cut > 0 and (len - cut >= max_len or bytes + #frame > max_bytes) do
  local oldest = redis.call('XRANGE', history, after, '+', 'COUNT', 1)[1]
  if not oldest then break end
  bytes = bytes - #oldest[2][2]  -- its one field: 'frame'
  cut, after = cut + 1, '(' .. oldest[1]
end
redis.call('XADD', history, 'MAXLEN', len - cut + 1, '0-' .. seq, 'frame', frame)
bytes = bytes + #frame
if bytes < 0 then bytes = 0 end

-- Only what changed is written (each field written costs Redis time).
if epoch ~= was_epoch then out[#out + 1] = 'epoch'; out[#out + 1] = epoch end
if tostring(max) ~= was_max then out[#out + 1] = 'progress'; out[#out + 1] = max end
out[#out + 1] = 'seq'; out[#out + 1] = seq
out[#out + 1] = 'bytes'; out[#out + 1] = bytes
out[#out + 1] = 'last_event_id'; out[#out + 1] = id
if ends then
  out[#out + 1] = 'run_ended'; out[#out + 1] = '1'
  if holder and token then out[#out + 1] = 'fence_ended'; out[#out + 1] = holder end
end
if keyed then
  redis.call('SET', receipt, id, 'EX', 600)
else
  receipts = receipts .. input.receipt .. '=' .. id .. ' '
  if #receipts > RECEIPTS_KEPT then
    receipts = string.sub(receipts, string.find(receipts, ' ', #receipts - RECEIPTS_KEPT, true) + 1)
  end
  out[#out + 1] = 'receipts'; out[#out + 1] = receipts
end

for i = 1, #patch do out[#out + 1] = patch[i] end
redis.call('HSET', state, unpack(out))

local ttl = active_ttl
if ends then ttl = retention_ttl end
redis.call('EXPIRE', history, ttl)
redis.call('EXPIRE', state, ttl)

-- Webhooks (issue 27): a run's end goes into the outbox in this same step
-- (broker/redis/outbox.rs): the channel, then the state. The runs under way (`running`,
-- a set of channels) are kept beside it for the hubs' stall scan (job.stalled): a run
-- goes in as it begins and out as it ends, so the publishes between cost nothing here.
-- Publishers need no setting: both are written whether or not a hub with webhooks ever
-- ran, so one that starts later tells what came before it (the group reads the stream
-- from its start). Until a hub reads the outbox (its consumer group exists), they are
-- bounded: the newest PRE_WEBHOOK_ENDS ends, and at most PRE_WEBHOOK_RUNS runs under way.
local PRE_WEBHOOK_ENDS, PRE_WEBHOOK_RUNS = 1000, 10000
if outbox then
  local begins = not ends and (seq == 1 or input.starts_run == '1' or run_ended)
  if ends or begins then
    local read = redis.call('EXISTS', outbox) == 1
      and #redis.call('XINFO', 'GROUPS', outbox) > 0
    if ends then
      local fields = redis.call('HGETALL', state)
      if read then
        redis.call('XADD', outbox, '*', 'channel', input.channel, unpack(fields))
      else
        redis.call('XADD', outbox, 'MAXLEN', '~', PRE_WEBHOOK_ENDS, '*', 'channel',
          input.channel, unpack(fields))
      end
      if running then redis.call('SREM', running, input.channel) end
    elseif running and (read or redis.call('SCARD', running) < PRE_WEBHOOK_RUNS) then
      redis.call('SADD', running, input.channel)
    end
  end
end

local publish = 'PUBLISH'
if input.publish == 'SPUBLISH' then publish = 'SPUBLISH' end
redis.call(publish, input.channel, frame)
return id
