-- One page of a project's history after a position, checked against the history (is
-- the position in it?), in ONE atomic step (and, on the first page, the project's state).
--
-- One command rather than MULTI/HGETALL/XRANGE/EXEC: on a Redis Cluster, a command sent
-- to a node that has just lost the project's slot (a failover) is answered MOVED, which
-- redis-rs follows to the new owner; inside MULTI it would abort the transaction instead.
--
-- The position is checked HERE, before any read of the history after it: it is in the
-- history when the entry at its sequence number carries exactly its id (sequence
-- numbers go on across epochs, and an epoch never repeats one, so that entry is the very
-- event; a position lost with the writes after a save, or made up, names an entry that
-- is missing or carries another id). A position whose entry was trimmed (or 0, before
-- a history's first event) is in it when the entry right after it carries the next id
-- of the same epoch. A resume from a made-up or lost position costs an HGET and one
-- entry's read, not a read of the history. A page is
-- bounded in entries and bytes, so no reader holds Redis for long however large the
-- history; the reader (read_replay in layout.rs) asks for pages until it has caught up.

local state, history = KEYS[1], KEYS[2]
  -- state:   the hash    progress:{<p>}:state
  -- history: the stream  progress:{<p>}:history
local epoch = ARGV[1]            -- the reader's position: its epoch
local seq = tonumber(ARGV[2])    -- and its sequence number
local max_count = tonumber(ARGV[3])  -- most entries in the page
local max_bytes = tonumber(ARGV[4])  -- most frame bytes in the page (at least one entry)
local with_state = ARGV[5] == '1'    -- also return the state (the first page)

-- Entries are read in small steps, so a page of large frames stops near max_bytes
-- instead of first copying max_count of them.
local STEP = 16

local hash = {}
if with_state then hash = redis.call('HGETALL', state) end

-- The entry's frame, and the id it carries: the first `"id":"` of a frame is its own
-- (every frame begins `{"event":"<name>","id":"`, publish.lua's `head`).
local function frame_of(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'frame' then return fields[i + 1] end
  end
  return ''
end
local function carries(entry, id)
  local frame = frame_of(entry)
  local at = string.find(frame, '"id":"', 1, true)
  return at ~= nil and string.sub(frame, at + 6, at + 6 + #id) == id .. '"'
end

-- A position beyond the newest event (or a project with no state) costs one HGET.
local newest = tonumber(redis.call('HGET', state, 'seq'))
if not newest or seq > newest then return {hash, {}} end
-- The entry at the position, or (trimmed, or 0: before the first event) the one right
-- after it in the same epoch, carrying exactly its id.
local next_seq = string.format('%d', seq + 1)
local near = redis.call('XRANGE', history, '0-' .. ARGV[2], '0-' .. next_seq, 'COUNT', 1)[1]
if not near then return {hash, {}} end
if near[1] == '0-' .. ARGV[2] then
  if not carries(near, epoch .. ':' .. ARGV[2]) then return {hash, {}} end
elseif not carries(near, epoch .. ':' .. next_seq) then
  return {hash, {}}
end

local start = '(0-' .. ARGV[2]
local page, bytes = {}, 0
while #page < max_count and bytes < max_bytes do
  local want_count = math.min(STEP, max_count - #page)
  local entries = redis.call('XRANGE', history, start, '+', 'COUNT', want_count)
  for _, entry in ipairs(entries) do
    local size = #frame_of(entry)
    if #page > 0 and bytes + size > max_bytes then return {hash, page} end
    page[#page + 1] = entry
    bytes = bytes + size
    start = '(' .. entry[1]
  end
  if #entries < want_count then break end
end
return {hash, page}
