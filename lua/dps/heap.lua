--- A min-heap of items by their `due` field (internal): the timers of the
-- drivers that run many machines on one engine (`dps.batch`, `dps.hubs`).
-- @module dps.heap
local heap = {}

--- Add `item` (its `due` set).
function heap.push(h, item)
  local i = #h + 1
  h[i] = item
  while i > 1 do
    local p = math.floor(i / 2)
    if h[p].due <= h[i].due then break end
    h[p], h[i] = h[i], h[p]
    i = p
  end
end

--- Take the item due first.
function heap.pop(h)
  local top, n = h[1], #h
  h[1] = h[n]
  h[n] = nil
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l < n and h[l].due < h[m].due then m = l end
    if r < n and h[r].due < h[m].due then m = r end
    if m == i then break end
    h[m], h[i] = h[i], h[m]
    i = m
  end
  return top
end

return heap
