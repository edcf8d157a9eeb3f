-- One page of a project's history after a position, checked against the epoch the
-- reader is in, in ONE atomic step (and, on the first page, the project's state).
--
-- One command rather than MULTI/HGETALL/XRANGE/EXEC: on a Redis Cluster, a command sent
-- to a node that has just lost the project's slot (a failover) is answered MOVED, which
-- redis-rs follows to the new owner; inside MULTI it would abort the transaction instead.
--
-- The epoch is compared HERE, before any XRANGE: a resume from a made-up or lost epoch
-- costs O(1), not a read of the whole history. A page is bounded in entries and bytes,
-- so no reader holds Redis for long however large the history; the reader (read_replay
-- in layout.rs) asks for pages until it has caught up.

local state, history = KEYS[1], KEYS[2]
  -- state:   the hash    progress:{<p>}:state
  -- history: the stream  progress:{<p>}:history
local epoch = ARGV[1]            -- the epoch the reader's position is in
local start = ARGV[2]            -- XRANGE start, e.g. (0-41 for the entries after 41
local max_count = tonumber(ARGV[3])  -- most entries in the page
local max_bytes = tonumber(ARGV[4])  -- most frame bytes in the page (at least one entry)
local with_state = ARGV[5] == '1'    -- also return the state (the first page)

-- Entries are read in small steps, so a page of large frames stops near max_bytes
-- instead of first copying max_count of them.
local STEP = 16

local hash = {}
if with_state then hash = redis.call('HGETALL', state) end
if redis.call('HGET', state, 'epoch') ~= epoch then return {hash, {}} end

local page, bytes = {}, 0
while #page < max_count and bytes < max_bytes do
  local want = math.min(STEP, max_count - #page)
  local entries = redis.call('XRANGE', history, start, '+', 'COUNT', want)
  for _, entry in ipairs(entries) do
    local size = 0
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'frame' then size = #fields[i + 1] end
    end
    if #page > 0 and bytes + size > max_bytes then return {hash, page} end
    page[#page + 1] = entry
    bytes = bytes + size
    start = '(' .. entry[1]
  end
  if #entries < want then break end
end
return {hash, page}
