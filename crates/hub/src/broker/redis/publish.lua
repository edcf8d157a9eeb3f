-- The hub's publish path, as ONE atomic step: append the event to the project's history,
-- update its state, and PUBLISH the frame carrying its id. Either all happens or none.
--
-- Its inputs are described once, by name, in contract/publish-inputs.json: KEYS in the
-- order it lists them; ARGV the values of the inputs every publish gives, in the order of
-- their names, then how many of the others (`given_only`) follow and those, in the order
-- it lists them, then the state patch as field/value pairs. Every publisher builds its call from
-- that file by name (the hub: broker/redis/publish_inputs.rs; the Python SDK: _redis.py),
-- and tests/contract.rs fails when the names below drift from it.
-- The script knows nothing of the product's state fields: the publisher sends them as
-- a patch, which the script writes as given.
--
-- Every call costs Redis time, and so does every Lua table and string made (the inputs
-- are locals, not a table built from ARGV; the state is written in one HSET without a
-- table on the usual path): scripts/bench_redis_time.sh measures it against its floor.
--
-- Returns the event id, '<epoch>:<seq>', or {id, 1} when this event began the project's
-- history or a new run (a retry answered from its receipt: the id alone). The
-- publisher then adds the project to the index of every project's runs,
-- progress:{tag:*}:projects, as it adds it to its tags' indexes (keys of other slots).

local history, state, receipt_key, fences, units = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local era_key, outbox, running = KEYS[6], KEYS[7], KEYS[8]

-- The inputs, by the names contract/publish-inputs.json gives them, in their order: those
-- every publish gives, then `given_only` up to the last one given (each value handed to
-- a script costs Redis time, an empty one too: a plain log gives none of these), nil
-- for one not given.
local active_ttl, channel, head, max_bytes, max_len, mid, new_epoch, publish, receipt,
  retention_ttl, tail, given = unpack(ARGV, 1, 12)
given = tonumber(given) or -1  -- (checked with the others below)
local progress, retry, fence_holder, fence_token, fence_unit, ends_run, progress_floor,
  starts_run, run_holder, keyed, unit_done, unit_progress = unpack(ARGV, 13, 12 + given)
-- The state patch (field, value, ...) follows them.
local PATCH_AT = 13 + given
-- The unkeyed receipts the state remembers: those of the last RING publishes, one field
-- each, 'receipt_<the last digit of seq>' = '<receipt>=<id>', so a publish writes one
-- short field and reads none (only a retry reads them all).
local RING = 10

local max_len_n, max_bytes = tonumber(max_len), tonumber(max_bytes)
active_ttl, retention_ttl = tonumber(active_ttl), tonumber(retention_ttl)
if not (max_len_n and max_bytes and active_ttl and retention_ttl and tail
    and head ~= '' and channel ~= '' and new_epoch ~= '' and receipt ~= ''
    and given >= 0 and given <= 12 and given % 1 == 0 and 12 + given <= #ARGV) then
  return redis.error_reply('ERR publish.lua: an input of contract/publish-inputs.json is missing')
end

-- A retried publish (its reply was lost, e.g. in an outage) must not append twice:
-- its receipt says it already happened, and with which id. A caller's idempotency key
-- (`keyed`) is remembered 10 minutes in its own key, looked up on every publish (a
-- caller may repeat its request at any time); any other receipt in the state, at no cost
-- of a key per publish: the last publish's (`receipt`), checked on every publish, for a
-- call sent again by the Redis client library itself (a cluster client does so after a
-- dropped connection, without saying it is a retry), and those of the last RING
-- publishes, looked up when the publisher says it is sending a publish again (`retry`:
-- it retries one publish at a time, at once, but others may publish meanwhile).
keyed = keyed == '1'
if keyed then
  local done = redis.call('GET', receipt_key)
  if done then return done end
elseif retry == '1' then
  local fields = {}
  for i = 0, RING - 1 do fields[#fields + 1] = 'receipt_' .. i end
  local ring, mark = redis.call('HMGET', state, unpack(fields)), receipt .. '='
  for i = 1, RING do
    if ring[i] and string.sub(ring[i], 1, #mark) == mark then
      return string.sub(ring[i], #mark + 1)
    end
  end
end

-- Every field this publish reads, in one read: its fence's too when it has one (each
-- field read costs Redis time).
local holder, token = fence_holder, tonumber(fence_token)
if holder == '' then holder = nil end
local s
if holder and token then
  s = redis.call('HMGET', state, 'epoch', 'seq', 'progress', 'bytes', 'run_ended', 'era',
    'receipt', 'fence_holder', 'fence_token', 'fence_ended', 'units_done')
else
  s = redis.call('HMGET', state, 'epoch', 'seq', 'progress', 'bytes', 'run_ended', 'era',
    'receipt')
end
local last = s[7]  -- '<receipt>=<id>' of the last unkeyed publish
if last and not keyed and string.byte(last, #receipt + 1) == 61  -- '='
    and string.sub(last, 1, #receipt) == receipt then
  return string.sub(last, #receipt + 2)
end
local epoch, seq = s[1], tonumber(s[2]) or 0
local max = tonumber(s[3]) or 0
-- The history's bytes (`bytes`). While every frame it holds is at most max_bytes / max_len
-- (`per_frame`: a log line or a progress update, with the defaults 4 MiB / 1,000), the count
-- bounds the bytes: max_len frames of at most `per_frame` bytes weigh at most max_bytes, so no
-- frame can ever go for its bytes, and the frames that go for the count (XADD MAXLEN) need
-- not be read. The state then says so, '-<per_frame>' (`small`), and keeps no sum. Otherwise it
-- keeps the exact sum, the seq of the newest frame above per_frame and per_frame:
-- '<bytes> <big> <per_frame>' (a plain number: a state written before, `big` unknown); once
-- that frame has gone, the history is small again.
local per_frame = math.floor(max_bytes / max_len_n)
local bytes, big, big_unit = tonumber(s[4]), nil, nil
local small
if bytes and bytes < 0 then
  small, bytes = -bytes, nil
elseif s[4] and not bytes then
  local b, g, u = string.match(s[4], '^(%d+) (%d+) (%d+)$')
  bytes, big, big_unit = tonumber(b), tonumber(g), tonumber(u)
end
local was_small = small
local was_epoch, was_max = epoch, tonumber(s[3])
local run_ended, seen_era = s[5], s[6]
local held_by, held_token, held_ended = s[8], tonumber(s[9]) or 0, s[10]
local units_done = tonumber(s[11] or '')
local out = {}  -- fields written at the end, in one HSET: name, value, ...

-- The history's length: 0 for none (an existing one always keeps its newest event). Its
-- entries are `0-<seq>` for every seq from its oldest to the state's, so once it can be
-- full its oldest entry, read for the trimming below anyway, tells its length: one read
-- for both. Before, XLEN. While the history is small (see `per_frame`), only whether it is
-- there: nothing of it is read, and the call that tells it, PTTL, also tells when the
-- keys expire (`left`, ms; see "The keys live" below).
-- The whole history read, for its exact bytes, its length, its oldest entry and its newest
-- frame above per_frame: only when the state does not tell them under this call's limits
-- (a frame above per_frame comes to a small history; the limits changed; a state written
-- before), and then the history is kept exactly until that frame has gone. It sets
-- (returns) bytes, len, oldest and big.
local len, oldest, left = 0, nil, nil
local function read_all(history, per_frame)  -- (no upvalue: each costs Redis time)
  local entries = redis.call('XRANGE', history, '-', '+')
  local bytes, big = 0, 0
  for i = 1, #entries do
    local size = #entries[i][2][2]  -- its one field: 'frame'
    bytes = bytes + size
    if size > per_frame then big = tonumber(string.sub(entries[i][1], 3)) end
  end
  return bytes, #entries, entries[1], big
end
if epoch and small == per_frame then
  left = redis.call('PTTL', history)  -- -2: no history
  if left ~= -2 then len = 1 end
elseif epoch and (small or big_unit ~= per_frame or not bytes) then
  small = nil
  bytes, len, oldest, big = read_all(history, per_frame)
elseif epoch and seq >= max_len_n then
  oldest = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)[1]
  if oldest then len = seq - tonumber(string.sub(oldest[1], 3)) + 1 end
elseif epoch then
  len = redis.call('XLEN', history)
end
local begun = 0
if not epoch or len == 0 then
  begun = 1
  -- A new history (first event, or the old one was lost): a new epoch, so no client can
  -- resume into it believing it is the old one.
  epoch = new_epoch
  redis.call('DEL', history, state)
  seq, max, bytes, run_ended, seen_era, len, oldest = 0, 0, 0, nil, nil, 0, nil
  small, big, was_small = per_frame > 0 and per_frame or nil, 0, nil
  held_by, held_token, held_ended = nil, 0, nil
  was_epoch, was_max = nil, nil
  units_done = nil
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
      epoch = new_epoch
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
local unit = holder and token and fence_unit ~= '' and fence_unit
local unit_was_done = false
if holder and token then
  if held_ended == holder then
    return redis.error_reply('STALE job ' .. holder .. ' has already completed')
  end
  if held_by == holder then
    if unit then
      local entry = redis.call('HGET', units, unit) or ''
      local newest = tonumber(string.match(entry, '^%d+')) or 0
      unit_was_done = string.find(entry, ' done', 1, true) ~= nil
      if token < newest then
        return redis.error_reply('STALE claim ' .. token .. ' of unit ' .. unit .. ' of job ' .. holder .. ' was superseded by claim ' .. newest)
      end
    elseif token < held_token then
      return redis.error_reply('STALE claim ' .. token .. ' of job ' .. holder .. ' was superseded by claim ' .. held_token)
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
  if unit and held_by == holder and token < held_token then newest = held_token end
  out[#out + 1] = 'fence_token'; out[#out + 1] = newest
end

-- A unit done (`unit_done`: N, the units of the run's current stage): counted once per
-- unit, whatever order they finish in and however often one is redelivered; the state
-- and the frame carry units_done and units_total, and the progress asked for is that of
-- k of N done within `unit_progress` ('a b': from a to b).
local units_frame = ''
local n = tonumber(unit_done)
if unit and n and n > 0 then
  local done = units_done or 0
  if not unit_was_done then done = done + 1 end
  if done > n then done = n end
  units_done = done
  out[#out + 1] = 'units_done'; out[#out + 1] = done
  out[#out + 1] = 'units_total'; out[#out + 1] = n
  local a, b = string.match(unit_progress or '', '^(%d+) (%d+)$')
  if a then
    progress = tostring(math.floor(tonumber(a) + (tonumber(b) - tonumber(a)) * done / n))
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
local ends = ends_run == '1'
if starts_run == '1' or (run_ended and not ends) then
  local starting = run_holder
  if starting and starting ~= '' and redis.call('SISMEMBER', fences, starting) == 1 then
    return redis.error_reply('STALE job ' .. starting .. ' has already begun')
  end
  begun = 1
  max = 0
  -- The state fields this script keeps itself; a new run forgets every other one.
  local SCRIPT_FIELDS = { epoch = true, seq = true, bytes = true, era = true, progress = true,
    last_event_id = true, run_ended = true, fence_holder = true, fence_token = true,
    fence_ended = true, receipt = true }
  local drop = {}
  for _, field in ipairs(redis.call('HKEYS', state)) do
    -- (the receipts, 'receipt_<n>', are kept: a retry may cross a run's start)
    if (not SCRIPT_FIELDS[field] and string.sub(field, 1, 8) ~= 'receipt_')
        or field == 'run_ended' then
      drop[#drop + 1] = field
    end
  end
  if #drop > 0 then redis.call('HDEL', state, unpack(drop)) end
end

-- Progress never goes backwards within a run: a lower value is clamped up.
local progress_frame = ''
if progress and progress ~= '' then
  local p = tonumber(progress)
  if p < max then p = max end
  max = p
  progress_frame = '"progress":' .. string.format('%d', p) .. units_frame
end
local floor = tonumber(progress_floor)
if floor and floor > max then max = floor end

seq = seq + 1
local sq = tostring(seq)  -- a number turned to a string once (each turning costs)
local id = epoch .. ':' .. sq
local frame = head .. id .. mid .. progress_frame .. tail
-- Beyond the count or the bytes the oldest go (the newest always stays): a project's
-- history costs at most max_bytes, whatever its events weigh. While the history is small
-- (see `per_frame`), the count alone, and the XADD's exact MAXLEN drops the oldest unread.
-- Otherwise each that goes is read first, for its bytes (the oldest perhaps read
-- already); the XADD's MAXLEN then drops them. Usually one.
if small and #frame > per_frame then
  small = nil
  bytes, len, oldest, big = read_all(history, per_frame)
end
local bytes_field = nil  -- the state's `bytes` when it changes
if small then
  redis.call('XADD', history, 'MAXLEN', max_len, '0-' .. sq, 'frame', frame)
  if was_small ~= per_frame then bytes_field = '-' .. per_frame end
else
  local cut, after = 0, '-'
  while len - cut > 0 and (len - cut >= max_len_n or bytes + #frame > max_bytes) do
    if cut > 0 or not oldest then
      oldest = redis.call('XRANGE', history, after, '+', 'COUNT', 1)[1]
    end
    if not oldest then break end
    bytes = bytes - #oldest[2][2]  -- its one field: 'frame'
    cut, after = cut + 1, '(' .. oldest[1]
  end
  local keep = len - cut + 1
  local kept_from = seq - keep + 1  -- the seq of the oldest entry kept
  if keep == max_len_n then keep = max_len end  -- the input as it came: no number to turn
  redis.call('XADD', history, 'MAXLEN', keep, '0-' .. sq, 'frame', frame)
  bytes = bytes + #frame
  if bytes < 0 then bytes = 0 end
  if #frame > per_frame then big = seq end
  if per_frame > 0 and kept_from > big then
    bytes_field = '-' .. per_frame
  else
    if big == seq then big = sq end
    bytes_field = bytes .. ' ' .. big .. ' ' .. per_frame
  end
end

local ring_field, ring_entry
if keyed then
  redis.call('SET', receipt_key, id, 'EX', 600)
else
  -- (the slot from the seq's last digit: a number made a string costs Redis time)
  ring_field, ring_entry = 'receipt_' .. string.sub(sq, -1), receipt .. '=' .. id
end

-- One HSET of what changed (each field written costs Redis time) and the patch. Usually
-- the sequence, the last id and the receipt only: written without a table.
if epoch ~= was_epoch then out[#out + 1] = 'epoch'; out[#out + 1] = epoch end
if max ~= was_max then out[#out + 1] = 'progress'; out[#out + 1] = max end
if ends then
  out[#out + 1] = 'run_ended'; out[#out + 1] = '1'
  if holder and token then out[#out + 1] = 'fence_ended'; out[#out + 1] = holder end
end
if #out == 0 and not keyed and not bytes_field then
  redis.call('HSET', state, 'seq', sq, 'last_event_id', id,
    'receipt', ring_entry, ring_field, ring_entry, unpack(ARGV, PATCH_AT))
elseif #out == 0 and not keyed then
  redis.call('HSET', state, 'seq', sq, 'bytes', bytes_field, 'last_event_id', id,
    'receipt', ring_entry, ring_field, ring_entry, unpack(ARGV, PATCH_AT))
else
  out[#out + 1] = 'seq'; out[#out + 1] = sq
  if bytes_field then out[#out + 1] = 'bytes'; out[#out + 1] = bytes_field end
  out[#out + 1] = 'last_event_id'; out[#out + 1] = id
  if not keyed then
    out[#out + 1] = 'receipt'; out[#out + 1] = ring_entry
    out[#out + 1] = ring_field; out[#out + 1] = ring_entry
  end
  for i = PATCH_AT, #ARGV do out[#out + 1] = ARGV[i] end
  redis.call('HSET', state, unpack(out))
end

-- The keys live at least `ttl` after this event, and at most an eighth longer: they are
-- given ttl + ttl/8 and given it again only once less than ttl is left (or more than
-- ttl + ttl/8: the ttl shrank), so a steady publisher sets it once every ttl/8, not on
-- every publish (each EXPIRE costs Redis time). Both keys are made and given their TTL
-- by the same calls, so the history's tells the state's too.
local ttl = active_ttl
if ends then ttl = retention_ttl end
ttl = ttl * 1000
local slack = math.floor(ttl / 8)
if begun == 1 then
  left = -2
elseif not left then
  left = redis.call('PTTL', history)
end
if left < ttl or left > ttl + slack then
  redis.call('PEXPIRE', history, ttl + slack)
  redis.call('PEXPIRE', state, ttl + slack)
end

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
  local begins = not ends and (seq == 1 or starts_run == '1' or run_ended)
  if ends or begins then
    local read = redis.call('EXISTS', outbox) == 1
      and #redis.call('XINFO', 'GROUPS', outbox) > 0
    if ends then
      local fields = redis.call('HGETALL', state)
      if read then
        redis.call('XADD', outbox, '*', 'channel', channel, unpack(fields))
      else
        redis.call('XADD', outbox, 'MAXLEN', '~', PRE_WEBHOOK_ENDS, '*', 'channel',
          channel, unpack(fields))
      end
      if running then redis.call('SREM', running, channel) end
    elseif running and (read or redis.call('SCARD', running) < PRE_WEBHOOK_RUNS) then
      redis.call('SADD', running, channel)
    end
  end
end

if publish ~= 'SPUBLISH' then publish = 'PUBLISH' end
redis.call(publish, channel, frame)
-- (a table answer costs Redis time: only when begun)
if begun == 1 then return {id, 1} end
return id
