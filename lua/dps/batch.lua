--- Many devices provisioned at once, without blocking (`dps.batch`).
--
-- Each device runs the `dps.poll` machine of `client:provision` (the same
-- code: Retry-After, 429/5xx/409 rules, 5 polls per 10 s, token renewal,
-- its own deadline); its requests are built by `dps.client`
-- (`Client:_request`) and read by `dps.response`, and they travel on one
-- `dps.core` engine: many transfers in flight, one pool of kept-alive
-- connections, TLS sessions resumed.
--
--    local b = dps.batch{ id_scope = scope, group_key = key, concurrency = 16, rate = 1000, timeout = 300 }
--    b:add("leaf-01", { payload = { site = "north" } })
--    local summary = b:run{ on_result = function(id, state, err, info) … end }
--    -- or, in an event loop: local wait_s, fds = b:step() … until b:done()
--
-- New registrations are paced to `rate` per minute (the DPS quota is per
-- unit), and a 429 to any registration holds every registration for its
-- Retry-After. Results come back per device: the registration state, or
-- `nil, message, info` as `client:provision`'s.
-- @classmod dps.batch
local core = require "dps.core"
local check = require "dps.check"
local errors = require "dps.errors"
local poll = require "dps.poll"
local response = require "dps.response"
local session = require "dps.session"
local Client = require "dps.client"

local Batch = {}
Batch.__index = Batch

local OPTIONS = {
  id_scope = "string", group_key = "string", endpoint = "string", api_version = "string",
  ca_file = "string", ca_path = "string", proxy = "string", user_agent = "string",
  connect_timeout = "number", request_timeout = "number", device_timeout = "number", token_ttl = "number",
  concurrency = "number", rate = "number", timeout = "number",
  on_result = "function", on_progress = "function", jitter = "function",
}
local ADD_OPTIONS = { payload = "table", symmetric_key = "string", cache = "table" }
local RUN_OPTIONS = { on_result = "function", on_progress = "function" }
-- What dps.new takes from the batch's options for each device's client.
local CLIENT_OPTIONS = { "id_scope", "group_key", "endpoint", "api_version", "ca_file", "ca_path", "token_ttl" }

Batch.OPTIONS = OPTIONS

local DEFAULT_CONCURRENCY, DEFAULT_RATE, DEFAULT_TIMEOUT = 16, 1000, 300
local DEFAULT_REQUEST_TIMEOUT, DEFAULT_CONNECT_TIMEOUT = 30, 10

-- A min-heap of devices by `due` (the time their machine wants a tick).
local function heap_push(h, dev)
  local i = #h + 1
  h[i] = dev
  while i > 1 do
    local p = math.floor(i / 2)
    if h[p].due <= h[i].due then break end
    h[p], h[i] = h[i], h[p]
    i = p
  end
end

local function heap_pop(h)
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

local function positive_integer(value, name, max, level)
  if value ~= nil and (value ~= math.floor(value) or value < 1 or value > max) then
    check.fail(string.format("dps.batch: %s must be an integer from 1 to %d", name, max), level + 1)
  end
end

-- dps.batch itself, blaming `level`.
local function new(opts, level)
  check.options(opts, OPTIONS, "dps.batch", level)
  check.id_scope(opts.id_scope, level)
  if opts.group_key ~= nil then
    local problem = core.key_problem(opts.group_key)
    if problem then check.fail("dps.batch: group_key is not base64: it " .. problem, level) end
  end
  positive_integer(opts.concurrency, "concurrency", 1024, level)
  for _, name in ipairs({ "rate", "timeout", "device_timeout", "request_timeout", "connect_timeout" }) do
    if opts[name] ~= nil then check.seconds(opts[name], name, level) end
  end
  local concurrency = opts.concurrency or DEFAULT_CONCURRENCY
  local self = setmetatable({
    opts = opts,
    concurrency = concurrency,
    interval = 60 / (opts.rate or DEFAULT_RATE), -- seconds between registrations
    timeout = opts.timeout or DEFAULT_TIMEOUT,
    device_timeout = opts.device_timeout or poll.DEFAULT_TIMEOUT,
    on_result = opts.on_result, on_progress = opts.on_progress,
    devices = {}, by_id = {},    -- add order; registration ID → device
    queue_head = 1,              -- devices[queue_head…] not started yet
    heap = {}, ready = {},       -- devices waiting for their time; due and waiting for a slot
    inflight = {},               -- engine transfer id → device
    finished_ids = {},           -- transfers the engine reported, not yet handled
    free = concurrency, finished = 0, assigned = 0,
    next_register = -math.huge,  -- pacing: no registration before this time
    hold_until = -math.huge,     -- a 429 holds every registration until this time
  }, Batch)
  self.engine = core.engine({
    ca_file = opts.ca_file, ca_path = opts.ca_path, proxy = opts.proxy, user_agent = opts.user_agent,
    timeout = opts.request_timeout or DEFAULT_REQUEST_TIMEOUT,
    connect_timeout = opts.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
  }, concurrency)
  return self
end

--- Make a batch (`dps.batch`).
-- @tparam table opts `id_scope`; `group_key` (or a `symmetric_key` per device
--   in `add`); optionally `endpoint`, `api_version`, `ca_file`, `ca_path`,
--   `proxy`, `user_agent`, `token_ttl`, `concurrency` (requests in flight,
--   default 16), `rate` (registrations per minute, default 1000), `timeout`
--   (overall seconds, default 300), `device_timeout` (seconds per device from
--   its first request, default 60), `request_timeout` (default 30),
--   `connect_timeout` (default 10), `on_result`, `on_progress` (as `run`'s)
-- @treturn dps.batch
-- @raise on unknown options, wrong types, a bad ID scope or group key
function Batch.new(opts)
  local b = new(opts, 3) -- not a tail call: new blames this function's caller
  return b
end
Batch._new = new

--- Add a device.
-- @tparam string id the registration ID
-- @tparam[opt] table opts `payload` (table), `symmetric_key` (the device's
--   own key, base64; else the batch's `group_key` derives it)
-- @raise on a bad ID, an ID added twice, a bad payload or key, no key at
--   all, or a closed batch
function Batch:add(id, opts)
  opts = opts or {}
  check.options(opts, ADD_OPTIONS, "batch:add", 2)
  check.registration_id(id, nil, 2)
  if self.by_id[id] then check.fail("batch:add: " .. id .. " was added already", 2) end
  if opts.symmetric_key == nil and self.opts.group_key == nil then
    check.fail("batch:add: " .. id .. " needs a symmetric_key (the batch has no group_key)", 2)
  end
  if opts.symmetric_key ~= nil then
    local problem = core.key_problem(opts.symmetric_key)
    if problem then check.fail("batch:add: symmetric_key is not base64: it " .. problem, 2) end
  end
  if not self.engine then check.fail("batch:add: the batch is closed", 2) end
  local dev = { id = id, key = opts.symmetric_key, index = #self.devices + 1 }
  dev.body = Client._body({ registration_id = id }, opts.payload, 2) -- checked now, sent later
  self.devices[dev.index] = dev
  self.by_id[id] = dev
  return self
end

-- A device is over: record, count, tell.
function Batch:_finish(dev, state, message, info)
  if dev.over then return end
  dev.over, dev.state, dev.message, dev.info = true, state, message, info
  if dev.client then dev.client:close() end
  dev.client, dev.machine, dev.body = nil, nil, nil
  self.finished = self.finished + 1
  if state then self.assigned = self.assigned + 1 end
  if self.on_result then self.on_result(dev.id, state, message, info) end
  if self.on_progress then self.on_progress(self.finished, #self.devices) end
end

-- The device's client (a request builder: its own session is closed at
-- once, the engine carries the requests).
function Batch:_client(dev)
  local copts = {}
  for _, name in ipairs(CLIENT_OPTIONS) do copts[name] = self.opts[name] end
  copts.registration_id = dev.id
  if dev.key then copts.group_key, copts.symmetric_key = nil, dev.key end
  local client, message, info = Client._new(copts, 4)
  if client then client.session:close() end
  return client, message, info
end

-- Whether a registration may go out now: pacing and the 429 hold.
function Batch:_may_register(now)
  return now >= self.next_register and now >= self.hold_until
end

-- Ticks a device that is due and has a slot; sends, waits or finishes.
function Batch:_tick(dev, now)
  local act = dev.machine:tick(now)
  if act.action == "wait" then
    dev.due = act.at
    return heap_push(self.heap, dev)
  elseif act.action ~= "send" then
    return self:_finish(dev, act.state, act.message, act.info)
  end
  if act.step == "register" then
    self.next_register = math.max(now, self.next_register) + self.interval
  end
  local req = dev.client:_request(act.step, core.now(), act.operation_id,
    act.step == "register" and dev.body or nil)
  local left = math.min(act.timeout, self.deadline - now)
  local xfer, message, info = self.engine:request(req.method, req.url, req.headers, req.body, math.max(left, 0.001))
  if not xfer then
    return self:_answer(dev, errors.transport(act.step, message, info))
  end
  dev.step = act.step
  self.inflight[xfer] = dev
  self.free = self.free - 1
end

-- The machine's verdict on an answer.
function Batch:_answer(dev, result, meta, info)
  local now = core.monotime()
  if not result and info.status == 429 and dev.step == "register" then
    self.hold_until = math.max(self.hold_until, now + (info.retry_after or poll.backoff(core.jitter, 1)))
  end
  local act = dev.machine:answer(now, result, meta, info)
  if act.action == "wait" then
    dev.due = act.at
    heap_push(self.heap, dev)
  else
    self:_finish(dev, act.state, act.message, act.info)
  end
end

-- Finished transfers: taken from the engine, interpreted, answered.
function Batch:_collect()
  local ids = self.finished_ids
  self.finished_ids = {}
  for _, xfer in ipairs(ids) do
    local dev = self.inflight[xfer]
    self.inflight[xfer] = nil
    self.free = self.free + 1
    local status, headers, body = session.result(self.engine:take(xfer))
    if status then
      self:_answer(dev, response.interpret(dev.step, status, headers, body, core.now()))
    else
      self:_answer(dev, errors.transport(dev.step, headers, body))
    end
  end
end

local function append(list, items)
  for _, v in ipairs(items) do list[#list + 1] = v end
end

-- Devices whose time came, then new devices, while slots, pacing and the
-- hold allow.
function Batch:_schedule(now)
  local heap, ready = self.heap, self.ready
  while heap[1] and heap[1].due <= now do
    ready[#ready + 1] = heap_pop(heap)
  end
  local waiting = {}
  for _, dev in ipairs(ready) do
    -- peek: a machine without an operation ID registers next
    local registers = dev.machine.operation_id == nil
    if self.free > 0 and (not registers or self:_may_register(now)) then
      self:_tick(dev, now)
    else
      waiting[#waiting + 1] = dev
    end
  end
  self.ready = waiting
  local devices = self.devices
  while self.free > 0 and devices[self.queue_head] and self:_may_register(now) do
    local dev = devices[self.queue_head]
    self.queue_head = self.queue_head + 1
    local client, message, info = self:_client(dev)
    if not client then
      self:_finish(dev, nil, message, info)
    else
      dev.client = client
      dev.machine = poll.new{ timeout = self.device_timeout, now = now, jitter = self.opts.jitter }
      self:_tick(dev, now)
    end
  end
end

-- The overall deadline passed: every device still open fails.
function Batch:_expire()
  for xfer in pairs(self.inflight) do self.engine:cancel(xfer) end
  self.inflight, self.ready, self.heap, self.finished_ids = {}, {}, {}, {}
  self.free = self.concurrency
  for _, dev in ipairs(self.devices) do
    if not dev.over then
      local _, message, info = errors.deadline(self.timeout,
        dev.machine and dev.machine.last_message or "never started", dev.machine and dev.machine.last_info)
      self:_finish(dev, nil, message, info)
    end
  end
  self.queue_head = #self.devices + 1
end

-- When the batch next wants a step, as seconds from now (nil: only a socket).
function Batch:_wait(now, engine_wait)
  local at = self.deadline
  if self.heap[1] then at = math.min(at, self.heap[1].due) end
  if self.free > 0 and (#self.ready > 0 or self.devices[self.queue_head]) then
    at = math.min(at, math.max(self.next_register, self.hold_until))
  end
  local wait = math.max(at - now, 0)
  if engine_wait then wait = math.min(wait, engine_wait) end
  return wait
end

--- Do what can be done now, without blocking.
-- @treturn number seconds after which to call `step` again
-- @treturn table sockets to watch (file descriptor → `"r"`, `"w"` or
--   `"rw"`): call `step` as soon as one is ready
-- @raise on a closed batch
function Batch:step()
  if not self.engine then check.fail("batch:step: the batch is closed", 2) end
  local now = core.monotime()
  self.deadline = self.deadline or now + self.timeout
  local _, _, done = self.engine:step()
  append(self.finished_ids, done)
  self:_collect()
  now = core.monotime()
  if now >= self.deadline then
    self:_expire()
  else
    self:_schedule(now)
  end
  local engine_wait, fds
  engine_wait, fds, done = self.engine:step()
  append(self.finished_ids, done)
  if #done > 0 then engine_wait = 0 end
  return self:_wait(core.monotime(), engine_wait), fds
end

--- Whether every device is over.
function Batch:done()
  return self.finished == #self.devices
end

--- Provision every device added, blocking.
-- @tparam[opt] table opts `on_result(id, state, message, info)` as each device
--   ends; `on_progress(done, total)`
-- @treturn table `{ total, assigned, failed, seconds, requests, connects }`
function Batch:run(opts)
  opts = opts or {}
  check.options(opts, RUN_OPTIONS, "batch:run", 2)
  self.on_result = opts.on_result or self.on_result
  self.on_progress = opts.on_progress or self.on_progress
  local t0 = core.monotime()
  while not self:done() do
    local wait = self:step()
    if not self:done() and wait > 0 then
      append(self.finished_ids, self.engine:run(wait))
    end
  end
  local stats = self.engine:stats()
  return { total = #self.devices, assigned = self.assigned, failed = self.finished - self.assigned,
    seconds = core.monotime() - t0, requests = stats.requests, connects = stats.connects }
end

--- Results so far, in the order of `add`: `{ id, state }` for an assigned
-- device, `{ id, message, info }` for one that failed (unfinished devices
-- are left out).
function Batch:results()
  local out = {}
  for _, dev in ipairs(self.devices) do
    if dev.over then
      out[#out + 1] = { id = dev.id, state = dev.state, message = dev.message, info = dev.info }
    end
  end
  return out
end

--- One device's result: state, or nil, message, info; nothing while it runs.
function Batch:result(id)
  local dev = self.by_id[id]
  if dev and dev.over then
    if dev.state then return dev.state end
    return nil, dev.message, dev.info
  end
end

--- Engine counters: `{ requests, connects, running, free, slots }`.
function Batch:stats()
  return self.engine:stats()
end

--- Drop everything in flight, close the connections, wipe the keys. Safe to
-- call more than once.
function Batch:close()
  if self.engine then
    self.engine:close()
    self.engine = nil
  end
  for _, dev in ipairs(self.devices) do
    if dev.client then dev.client:close() end
    dev.client, dev.key = nil, nil
  end
  return true
end
Batch.__close = Batch.close

return Batch
