--- Many devices' hub traffic on one engine, without blocking (`dps.hubs`).
--
-- A pool of devices whose calls to their IoT Hub (`send`, `send_batch`,
-- `receive`, `complete`, `reject`, `abandon`) are in flight at once on one
-- engine (`dps.core.engine`: kept-alive connections per host, TLS sessions
-- shared), driven by `step()` like `dps.batch`: it never blocks, so an event
-- loop (uloop, cqueues, luv, …) keeps its turn.
--
--    local pool = dps.hubs{ concurrency = 32, timeout = 30 }
--    local leaf = pool:add{ id_scope = scope, registration_id = "leaf-01", group_key = key,
--                           cache = "/var/lib/gw/leaf-01.json" }
--    local ok, message, info = leaf:send('{"t":21.5}', nil, function(result, meta_or_message, info, item)
--      if not result then keep(item) end        -- the failure, and the message handed back
--    end)
--    -- ok is nil only when the device's queue is full (info.kind "queue_full")
--    repeat local wait_s, fds = pool:step() --[[ arm a timer, watch fds ]] until pool:idle()
--
-- Each device keeps its calls in order: one call of a device is in flight
-- at a time, so its messages arrive in the order they were queued; many
-- devices are in flight at once, up to `concurrency`. Each call runs the
-- call machine of `dps.retry`, with the rules of the blocking `dps.hub`:
-- Retry-After (never below the back-off), back-off, the wrong-clock retry
-- once per call, provisioning again once per call when the hub refuses the
-- device, and one deadline (`timeout`) for the call, retries and provisioning
-- again included, from its first request (time spent in the device's queue,
-- or waiting for a free slot before its first request, is not counted).
-- Each request is limited to `request_timeout`. The first request to a
-- host goes alone, so that the connections opened after it resume its TLS
-- session; a step starts at most `dps.runtime.STARTS_PER_STEP` requests.
--
-- Every call queued ends exactly once through its `on_done`:
-- `on_done(result, meta)` when it succeeded (`true` for sends and settles;
-- for `receive` the message, or `false` when nothing waits), else
-- `on_done(nil, message, info, item)`, where `item` is what was handed in
-- (`{ step = "send", body = …, opts = … }`, `{ step = "send_batch",
-- messages = … }`, `{ step = "receive" }`, `{ step = "complete", message = …
-- }`, …) so that the app can keep it; at `close()` the calls not over end
-- with kind `closed`. A call that does not fit in the device's queue is
-- refused at once (`nil, message, { kind = "queue_full" }`): the message
-- stays the caller's, nothing is dropped silently.
--
-- Provisioning: a device added with its DPS identity (`id_scope`,
-- `registration_id`) and no assignment provisions first (the `dps.poll`
-- machine, on the same engine), from its assignment cache when it has a
-- matching one (`cache`), while its calls wait; when the hub refuses it (401
-- with a correct clock, 403, 404) it provisions again once per call, with the
-- hold of `dps.connect` (one registration again per refusal episode, the
-- hold kept in its cache). Registrations of the pool are paced to `rate` per
-- minute and held on a 429, by the rules of `dps.batch` (`dps.pace`).
--
-- X.509 devices are not taken: the engine has one TLS client certificate
-- for all its connections (use `dps.hub` or `dps.connect` for them).
-- @classmod dps.hubs
local core = require "dps.core"
local cache = require "dps.cache"
local check = require "dps.check"
local connect = require "dps.connect"
local errors = require "dps.errors"
local heap = require "dps.heap"
local hub_message = require "dps.hub_message"
local hub_response = require "dps.hub_response"
local pace = require "dps.pace"
local poll = require "dps.poll"
local request = require "dps.request"
local response = require "dps.response"
local retry = require "dps.retry"
local runtime = require "dps.runtime"

local Hubs = {}
Hubs.__index = Hubs

local Device = {}
Device.__index = Device

--- Default `concurrency`: requests in flight at once.
Hubs.DEFAULT_CONCURRENCY = 32
--- Default `timeout` of one call (seconds, overall: retries and provisioning again included).
Hubs.DEFAULT_TIMEOUT = 30
--- Default `queue`: calls of one device not yet over (the one in flight included).
Hubs.DEFAULT_QUEUE = 64
--- Default `provision_timeout`: seconds for one provisioning from its first request.
Hubs.DEFAULT_PROVISION_TIMEOUT = poll.DEFAULT_TIMEOUT
--- Longest wait `step` hands out when nothing is due (seconds).
Hubs.IDLE_WAIT = 60

local DEFAULT_DPS_ENDPOINT = "https://global.azure-devices-provisioning.net"

--- Option names and types of `dps.hubs`.
-- @local
Hubs.OPTIONS = check.extend(runtime.TRANSPORT, { concurrency = "number", timeout = "number", queue = "number",
  rate = "number", provision_timeout = "number" })

--- Option names and types of `pool:add`.
-- @local
Hubs.ADD_OPTIONS = check.extend(request.ATTESTATION, {
  state = "table", hub = "string", device_id = "string", endpoint = "string", api_version = "string",
  token_ttl = "number", clock_offset = "number",
  id_scope = "string", registration_id = "string", dps_endpoint = "string", cache = "string", payload = "table",
})

-- A first-in, first-out list of devices: { first, last, [first..last] = devices }
-- (counting from 1 again whenever it empties, so it stays an array).
local function fifo() return { first = 1, last = 0 } end
local function fifo_push(q, dev) q.last = q.last + 1; q[q.last] = dev end
local function fifo_pop(q)
  local i = q.first
  local dev = q[i]
  q[i] = nil
  if i == q.last then q.first, q.last = 1, 0 else q.first = i + 1 end
  return dev
end
local function fifo_empty(q) return q.first > q.last end

-- A device's calls waiting, in order, three slots each in one array: what
-- was handed in (a send without options as its body alone: see `item_of`),
-- its on_done, and what was made of it at the door (headers, a batch's body,
-- a lock token), so that a waiting call costs no table of its own.
local function calls() return { first = 1, last = 0 } end
local function calls_push(q, item, on_done, prep)
  local i = q.last + 1
  q.last, q[3 * i - 2], q[3 * i - 1], q[3 * i] = i, item, on_done, prep
end
local function calls_pop(q)
  local i = q.first
  local j = 3 * i
  local item, on_done, prep = q[j - 2], q[j - 1], q[j]
  q[j - 2], q[j - 1], q[j] = nil, nil, nil
  if i == q.last then q.first, q.last = 1, 0 else q.first = i + 1 end
  return item, on_done, prep
end

-- What a queued call was handed in as (`{ step, body, opts }`, …), and its
-- step: a send without options waits as its body alone.
local function item_of(item)
  if type(item) == "string" then return { step = "send", body = item } end
  return item
end
local function step_of(item)
  return type(item) == "string" and "send" or item.step
end

-- The hub call of a queued call (`dps.request`'s `hub_request` takes it):
-- the routes of `dps.hub`'s calls (`dps.hub_message.call`).
local function call_of(item, prep)
  if type(item) == "string" then
    return hub_message.call("send", nil, item)
  elseif item.step == "send" then
    return hub_message.call("send", prep, item.body)
  end
  return hub_message.call(item.step, prep, prep)
end

-- Options -----------------------------------------------------------------

local function whole(n, low, high)
  return n == nil or (n == math.floor(n) and n >= low and n <= high)
end

--- The misuse in `dps.hubs`'s options, or nil.
-- @local
function Hubs.options_problem(opts)
  local problem = check.options(opts, Hubs.OPTIONS, "dps.hubs")
  if problem then return problem end
  if not whole(opts.concurrency, 1, 1024) then
    return "dps.hubs: concurrency must be an integer from 1 to 1024"
  elseif not whole(opts.queue, 1, 2 ^ 31) then
    return "dps.hubs: queue must be a positive integer"
  end
  for _, name in ipairs({ "timeout", "rate", "provision_timeout" }) do
    problem = problem or check.seconds(opts[name], name, true)
  end
  return problem or runtime.options_problem(opts)
end

-- The assignment in `add`'s options: host, device ID (both nil: none).
local function assignment(opts)
  local state = opts.state or {}
  return opts.hub or state.assignedHub, opts.device_id or state.deviceId
end

local function registration_id_of(opts)
  return opts.registration_id or (opts.state and opts.state.registrationId)
end

-- Take an assignment: the builder talks to the new hub from now on.
local function assign(dev, state, how)
  dev.state, dev.how, dev.message, dev.info = state, how, nil, nil
  dev.builder:assign(state.assignedHub, state.deviceId)
  if how.clock_offset then dev.builder:set_clock_offset(how.clock_offset) end
  dev.phase = "assigned"
end

-- The misuse in `pool:add`'s options, or nil.
local function add_problem(opts)
  local problem = check.options(opts, Hubs.ADD_OPTIONS, "pool:add")
  if problem then return problem end
  local attestation, has_cert = request.attestation_problem(opts, request.HUB_API_VERSION)
  if has_cert then
    return "pool:add: X.509 devices need their own TLS client certificate, which the pool's engine cannot "
      .. "give: use dps.hub or dps.connect for them"
  elseif attestation then
    return "pool:add: " .. attestation
  end
  local host, device_id = assignment(opts)
  local registration_id = registration_id_of(opts)
  if host ~= nil or device_id ~= nil or opts.state ~= nil then
    problem = response.host_problem(host)
    if problem then return "pool:add: the hub (state.assignedHub or hub) " .. problem end
    problem = response.device_id_problem(device_id)
    if problem then return "pool:add: the device ID (state.deviceId or device_id) " .. problem end
  elseif opts.id_scope == nil then
    return "pool:add: give the assignment (state, or hub and device_id), or the DPS identity (id_scope and "
      .. "registration_id) to provision it"
  end
  if opts.id_scope ~= nil or opts.group_key ~= nil then
    problem = check.registration_id(registration_id, "registration_id (or state.registrationId)")
    if problem then return "pool:add: " .. problem end
  end
  problem = (opts.id_scope ~= nil and check.id_scope(opts.id_scope))
    or ((opts.cache ~= nil or opts.dps_endpoint ~= nil or opts.payload ~= nil) and opts.id_scope == nil
      and "pool:add: cache, dps_endpoint and payload need the DPS identity (id_scope and registration_id)")
    or (opts.cache ~= nil and check.string(opts.cache, "cache"))
  if problem then return problem end
  local offset = opts.clock_offset
  if offset ~= nil and (offset ~= offset or math.abs(offset) == math.huge) then
    return "pool:add: clock_offset must be a number of seconds"
  end
  for _, name in ipairs({ "endpoint", "dps_endpoint" }) do
    if opts[name] ~= nil then
      local _, why = request.endpoint(opts[name], name)
      if why then return "pool:add: " .. why end
    end
  end
  if opts.payload ~= nil then
    local _, bad = request.body(registration_id, opts.payload)
    if bad then return "pool:add: " .. bad end
  end
  return nil
end

-- The pool -----------------------------------------------------------------

--- A pool from checked options (`options_problem`), on the runtime `rt`.
-- @local
function Hubs.create(opts, rt)
  rt = runtime.new(rt)
  local concurrency = opts.concurrency or Hubs.DEFAULT_CONCURRENCY
  local self = setmetatable({
    rt = rt,
    concurrency = concurrency,
    timeout = opts.timeout or Hubs.DEFAULT_TIMEOUT,
    request_timeout = opts.request_timeout or runtime.DEFAULT_REQUEST_TIMEOUT,
    provision_timeout = opts.provision_timeout or Hubs.DEFAULT_PROVISION_TIMEOUT,
    queue_limit = opts.queue or Hubs.DEFAULT_QUEUE,
    pace = pace.new{ rate = opts.rate, jitter = rt.jitter }, -- registrations: the pace and the 429 hold
    devices = {},
    heap = {},            -- devices waiting for their time
    ready = fifo(),       -- devices due, waiting for a slot
    paced = fifo(),       -- devices due to register, waiting for the pace and a slot
    warm = {},            -- host → true once a request to it ended (its TLS session is there to resume)
    warming = {},         -- host → devices waiting while the first request to it is in flight
    watch_at = math.huge, -- the earliest deadline of a device in ready or paced (a lower bound)
    inflight = {},        -- engine transfer id → device
    finished_ids = {},    -- transfers the engine reported, not yet handled
    free = concurrency,
    starts = 0,           -- requests started in this step
    counts = { done = 0, failed = 0, queued = 0, provisioning = 0, provisioned = 0, provision_failed = 0,
      reprovisions = 0 },
  }, Hubs)
  self.engine = rt.transport or core.engine(runtime.engine_options(opts), concurrency)
  return self
end

--- Make a pool (`dps.hubs`).
-- @tparam table opts all optional: `concurrency` (requests in flight at
--   once, default 32), `timeout` (seconds, overall, of one call: retries and
--   provisioning again included; default 30), `queue` (calls of one device
--   not yet over, default 64), `rate` (registrations per minute of the pool,
--   default 1000), `provision_timeout` (seconds for one provisioning from its
--   first request, default 60; provisioning again within a call also ends
--   by the call's deadline), and the transport options `request_timeout`
--   (seconds for one request, default 30), `connect_timeout` (default 10),
--   `ca_file`, `ca_path`, `proxy`, `user_agent`, `max_body` (bytes of one
--   answer)
-- @tparam[opt] table rt a runtime for specs and event loops (`dps.runtime`;
--   its `transport` is an engine)
-- @treturn dps.hubs
-- @raise on unknown options or wrong values
function Hubs.new(opts, rt)
  local problem = Hubs.options_problem(opts or {})
  if problem then error(problem, 2) end
  return Hubs.create(opts or {}, rt)
end

function Hubs:__tostring()
  return string.format("dps.hubs(%d devices, %d calls queued%s)", #self.devices, self.counts.queued,
    self.engine and "" or ", closed")
end

--- Add a device.
-- @tparam table opts what `dps.hub` takes to know the device: `state` (a
--   registration state: `assignedHub`, `deviceId`, and `registrationId` for
--   `group_key`) or `hub` and `device_id`; one attestation (`symmetric_key`,
--   or `group_key` with `registration_id`); optionally `endpoint` (where to
--   connect instead of `https://{hub}`: tokens still name the hub),
--   `api_version`, `token_ttl`, `clock_offset`. So that it can provision
--   (again): `id_scope` and `registration_id`, and optionally `dps_endpoint`
--   (default the global endpoint), `cache` (the assignment cache's path:
--   a matching cache gives the assignment with no request, and keeps the
--   hold on provisioning again) and `payload`. Without an assignment, the
--   device provisions first.
-- @treturn table the device's handle (`send`, `send_batch`, `receive`,
--   `complete`, `reject`, `abandon`, `provisioned`); never blocks (it reads
--   the device's `cache` file, if given; provisioning runs in `step`)
-- @raise on unknown options, wrong types, not exactly one symmetric
--   attestation, neither an assignment nor a DPS identity, a closed pool
function Hubs:add(opts)
  local problem = (not self.engine and "pool:add: the pool is closed") or add_problem(opts)
  if problem then error(problem, 2) end
  local registration_id = registration_id_of(opts)
  local key = request.device_key(opts, registration_id)
  local host, device_id = assignment(opts)
  local dps_endpoint = opts.id_scope and request.endpoint(opts.dps_endpoint or DEFAULT_DPS_ENDPOINT)
  local dev = setmetatable({
    pool = self,
    name = registration_id or device_id,
    queue = calls(),   -- calls waiting, in order
    open = 0,          -- calls not over (the one running included)
    call = nil,        -- the call running: { machine, call, item, on_done, reprovisioned }
    machine = nil,     -- provisioning (first, or again within a call): the dps.poll machine
    phase = host and "assigned" or "provision",
    cache = opts.cache,
    body = opts.id_scope and request.body(registration_id, opts.payload),
  }, Device)
  dev.builder = request.new{ id_scope = opts.id_scope, registration_id = registration_id, endpoint = dps_endpoint,
    hub = host, device_id = device_id, hub_endpoint = opts.endpoint and request.endpoint(opts.endpoint),
    hub_api_version = opts.api_version, token_ttl = opts.token_ttl, clock_offset = opts.clock_offset,
    key = key, credential = opts.cache and cache.key_fingerprint(key) }
  if opts.id_scope then
    local old, ignored
    if opts.cache then
      old, ignored = cache.load(opts.cache, dev.builder:identity())
      dev.cache_old, dev.cache_ignored = old, ignored
    end
    local path = opts.cache
    dev.link = connect.link{ hold = old and old.hold,
      keep = path and function(hold, now) cache.store_hold(path, dev.builder:identity(), hold, now) end }
    if not host and old then
      assign(dev, old.state, { source = "cache", cache = path, written_at = old.written_at,
        clock_offset = dev.builder.clock_offset, cache_written = false, hold = old.hold })
    end
  end
  self.devices[#self.devices + 1] = dev
  if dev.phase == "provision" then
    self:_provision(dev)
  end
  return dev
end

-- A device starts provisioning (its first, or after a failed one): it waits
-- for the pace.
function Hubs:_provision(dev)
  dev.phase = "provision"
  self.counts.provisioning = self.counts.provisioning + 1
  if not dev.busy then self:_wake(dev) end
end

-- A device wants to act now: to register (the pace first), or else to tick.
function Hubs:_wake(dev)
  dev.busy = true
  local m = dev.machine
  local registers = dev.phase == "provision" and not m or (m and m:next_step() == "register")
  local q = registers and self.paced or self.ready
  fifo_push(q, dev)
  local running = m or (dev.call and dev.call.machine)
  if running and running.deadline < self.watch_at then self.watch_at = running.deadline end
end

-- The device has nothing to do (no call, no provisioning), or its next call.
function Hubs:_next(dev)
  dev.busy = false
  if dev.phase == "provision" or not fifo_empty(dev.queue) then
    self:_wake(dev)
  end
end

-- Requests ----------------------------------------------------------------

-- Where the device's next request goes: DPS while it provisions, else its
-- hub (the key of the host's warm-up).
local function host_of(dev)
  local b = dev.builder
  if dev.machine or dev.phase == "provision" then return b.endpoint end
  return b.hub_endpoint or b.hub
end

-- Hand one request to the engine; a failure to start it is its answer. The
-- first request to a host goes alone: the others wait until it ended, then
-- resume its TLS session instead of each making a full handshake.
function Hubs:_request(dev, req, timeout, interpret)
  dev.step, dev.interpret = req.step, interpret
  local xfer, message, info = self.engine:request(req.method, req.url, req.headers, req.body, math.max(timeout, 0.001))
  if not xfer then
    return self:_answer(dev, errors.transport(req.step, message, info))
  end
  local host = host_of(dev)
  if not self.warm[host] and not self.warming[host] then
    self.warming[host], dev.warms = fifo(), host
  end
  self.inflight[xfer] = dev
  self.free = self.free - 1
  self.starts = self.starts + 1
end

-- The first request to a host ended: the devices that waited for it go on.
function Hubs:_warmed(host)
  self.warm[host] = true
  local q = self.warming[host]
  self.warming[host] = nil
  while q and not fifo_empty(q) do self:_wake(fifo_pop(q)) end
end

-- Finished transfers: taken from the engine, read, answered.
function Hubs:_collect()
  local ids = self.finished_ids
  self.finished_ids = {}
  for _, xfer in ipairs(ids) do
    local dev = self.inflight[xfer]
    if dev then
      self.inflight[xfer] = nil
      self.free = self.free + 1
      local status, head, body = runtime.take(self.engine, xfer)
      if dev.warms then
        self:_warmed(dev.warms)
        dev.warms = nil
      end
      self:_answer(dev, runtime.reply(dev.interpret, dev.step, self.rt.now(), status, head, body))
    end
  end
end

-- The answer to a device's request, to the machine that asked for it.
function Hubs:_answer(dev, result, meta, info)
  local now = self.rt.monotime()
  if dev.machine then
    self.pace:answered(now, dev.step, not result and info or nil)
    return self:_provision_act(dev, dev.machine:answer(now, result, meta, info), now)
  end
  return self:_call_act(dev, dev.call.machine:answer(now, result, meta, info), now)
end

-- Provisioning ------------------------------------------------------------

function Hubs:_provision_act(dev, act, now)
  if act.action == "wait" then
    dev.due = act.at
    return heap.push(self.heap, dev)
  elseif act.action == "send" then
    if act.step == "register" then self.pace:registered(now) end
    local b = dev.builder
    b:set_clock_offset(act.clock_offset)
    return self:_request(dev, b:dps_request(act.step, self.rt.now(), act.operation_id,
      act.step == "register" and dev.body or nil), math.min(act.timeout, self.request_timeout), response.interpret)
  end
  dev.machine = nil
  if act.action == "done" then
    return self:_provisioned(dev, act.state, self:_keep(dev, act))
  end
  return self:_provisioned(dev, nil, act.message, act.info)
end

-- How a device that the service assigned was provisioned; its cache
-- written when it has one.
function Hubs:_keep(dev, act)
  local how = { source = "service", result = act.result, clock_offset = act.clock_offset, cache = dev.cache,
    cache_ignored = dev.cache_ignored, cache_written = false }
  if dev.cache then
    local status, problem = cache.store(dev.cache, dev.builder:identity(), act.state,
      self.rt.now() + act.clock_offset, dev.cache_old, dev.link.hold)
    how.cache_written = status == "written"
    how.cache_error = problem
    dev.cache_old = nil
  end
  return how
end

-- Provisioning is over: within a call, the call goes on; else the calls
-- that waited start, or end with its failure.
function Hubs:_provisioned(dev, state, how, info)
  local now = self.rt.monotime()
  if dev.call then
    if state then
      assign(dev, state, how)
      return self:_call_act(dev, dev.call.machine:reprovisioned(now, true, dev.builder.clock_offset), now)
    end
    return self:_call_act(dev, dev.call.machine:reprovisioned(now, false, how, info), now)
  end
  local counts = self.counts
  counts.provisioning = counts.provisioning - 1
  if state then
    counts.provisioned = counts.provisioned + 1
    assign(dev, state, how)
    return self:_next(dev)
  end
  counts.provision_failed = counts.provision_failed + 1
  dev.phase, dev.message, dev.info = "failed", how, info
  dev.busy = false
  -- the calls that waited for it end with its failure (a later call provisions again)
  local q = dev.queue
  dev.queue = calls()
  while not fifo_empty(q) do
    local item, on_done = calls_pop(q)
    local copy = {}
    for k, v in pairs(info) do copy[k] = v end
    self:_end(dev, { item = item, on_done = on_done }, nil, how, copy)
  end
end

-- A device that cannot register before its deadline: provisioning ends.
function Hubs:_cannot_register(dev, now)
  local m = dev.machine
  dev.machine = nil
  local _, message, info = self.pace:failure(m.deadline, now, m.timeout, m.last_message, m.last_info)
  return self:_provisioned(dev, nil, message, info)
end

-- Calls -------------------------------------------------------------------

function Hubs:_call_act(dev, act, now)
  local entry = dev.call
  if act.action == "wait" then
    dev.due = act.at
    return heap.push(self.heap, dev)
  elseif act.action == "send" then
    local b = dev.builder
    b:set_clock_offset(act.clock_offset)
    return self:_request(dev, b:hub_request(entry.call, self.rt.now()), math.min(act.timeout, self.request_timeout),
      hub_response.interpret)
  elseif act.action == "reprovision" then
    entry.reprovisioned = true
    self.counts.reprovisions = self.counts.reprovisions + 1
    dev.machine = poll.new{ timeout = math.min(act.timeout, self.provision_timeout), now = now,
      jitter = self.rt.jitter, clock_offset = dev.builder.clock_offset }
    return self:_wake(dev)
  end
  dev.call = nil
  local link = dev.link
  if link then
    link.after_call(self.rt.now(), act.action == "done", entry.reprovisioned, act.info)
  end
  self:_next(dev)
  if act.action == "done" then
    return self:_end(dev, entry, act.result, act.meta)
  end
  return self:_end(dev, entry, nil, act.message, act.info)
end

-- A call is over: counted, then told (last: on_done may queue more).
function Hubs:_end(dev, entry, result, meta, info)
  local counts = self.counts
  dev.open = dev.open - 1
  counts.queued = counts.queued - 1
  if result ~= nil then
    counts.done = counts.done + 1
    return entry.on_done(result, meta)
  end
  counts.failed = counts.failed + 1
  return entry.on_done(nil, meta, info, item_of(entry.item))
end

-- The device is due and may act now (a slot is free; for a registration,
-- the pace allows): tick its machine, or start its next call; while the
-- first request to its host is in flight, wait for it (unless its deadline
-- passed: then it ends).
function Hubs:_advance(dev, now)
  local waiting = self.warming[host_of(dev)]
  if waiting then
    local m = dev.machine or (dev.call and dev.call.machine)
    if not (m and now >= m.deadline) then
      return fifo_push(waiting, dev)
    end
  end
  if dev.machine then
    return self:_provision_act(dev, dev.machine:tick(now), now)
  elseif dev.phase == "provision" then
    dev.machine = poll.new{ timeout = self.provision_timeout, now = now, jitter = self.rt.jitter,
      clock_offset = dev.builder.clock_offset }
    return self:_provision_act(dev, dev.machine:tick(now), now)
  end
  if not dev.call then
    if fifo_empty(dev.queue) then
      dev.busy = false
      return
    end
    local item, on_done, prep = calls_pop(dev.queue)
    local entry = { item = item, on_done = on_done, call = call_of(item, prep) }
    entry.machine = retry.call{ step = step_of(item), timeout = self.timeout, now = now, jitter = self.rt.jitter,
      clock_offset = dev.builder.clock_offset,
      reprovision = dev.link ~= nil and dev.link.may_reprovision(self.rt.now()) }
    dev.call = entry
  end
  return self:_call_act(dev, dev.call.machine:tick(now), now)
end

-- The devices waiting for a slot or the pace whose deadline passed end now
-- (their machine says so), and so do provisionings the pace or the 429 hold
-- keep past their deadline.
function Hubs:_sweep(now)
  self.watch_at = math.huge
  local lists = { self.ready, self.paced }
  self.ready, self.paced = fifo(), fifo()
  for host, q in pairs(self.warming) do
    lists[#lists + 1] = q
    self.warming[host] = fifo()
  end
  for _, q in ipairs(lists) do
    while not fifo_empty(q) do
      local dev = fifo_pop(q)
      local m = dev.machine or (dev.call and dev.call.machine)
      if m and now >= m.deadline then
        self:_advance(dev, now) -- ends: its deadline passed
      elseif dev.machine and q == lists[2] and self.pace:too_late(dev.machine.deadline) then
        self:_cannot_register(dev, now)
      else
        self:_wake(dev)
      end
    end
  end
  self.swept_hold = self.pace.hold_until
end

-- Devices whose time came, then what the slots, the pace and the starts
-- of one step allow.
function Hubs:_schedule(now)
  self.starts = 0
  local timers = self.heap
  while timers[1] and timers[1].due <= now do
    self:_wake(heap.pop(timers))
  end
  if now >= self.watch_at or self.pace.hold_until ~= self.swept_hold then
    self:_sweep(now)
  end
  local paced, ready = self.paced, self.ready
  while self.free > 0 and self.starts < runtime.STARTS_PER_STEP and not fifo_empty(paced) do
    if not self.pace:allows(now) then
      now = self.rt.monotime() -- at a high rate, the next turn may have come while these went out
      if not self.pace:allows(now) then break end
    end
    local dev = fifo_pop(paced)
    if dev.machine and self.pace:too_late(dev.machine.deadline) then
      self:_cannot_register(dev, now)
    else
      self:_advance(dev, now)
    end
  end
  -- (the devices that come due while these act wait for the next step)
  for _ = 1, ready.last - ready.first + 1 do
    if self.free == 0 or self.starts >= runtime.STARTS_PER_STEP then break end
    self:_advance(fifo_pop(ready), now)
  end
  if fifo_empty(self.ready) and fifo_empty(self.paced) then
    self.watch_at = math.huge -- no device waits: no deadline to watch
  end
end

-- When the pool next wants a step, as seconds from now.
function Hubs:_wait(now, engine_wait)
  local at = now + Hubs.IDLE_WAIT
  if self.heap[1] then at = math.min(at, self.heap[1].due) end
  if self.free > 0 then
    if not fifo_empty(self.ready) then at = now end
    if not fifo_empty(self.paced) then at = math.min(at, self.pace:register_at()) end
  end
  at = math.min(at, self.watch_at)
  if self.pace.hold_until ~= self.swept_hold then at = now end
  local wait = math.max(at - now, 0)
  if engine_wait then wait = math.min(wait, engine_wait) end
  return wait
end

local function append(list, items)
  for _, v in ipairs(items) do list[#list + 1] = v end
end

local function closed_problem(self, what)
  return not self.engine and ("pool:" .. what .. ": the pool is closed") or nil
end

--- Do what can be done now, without blocking. Call it again after the
-- seconds it returns at the latest, as soon as a socket it returns is
-- ready, and after queuing calls (a call starts at the next step).
-- @treturn number seconds after which to call `step` again
-- @treturn table sockets to watch (file descriptor → `"r"`, `"w"` or
--   `"rw"`): call `step` as soon as one is ready
-- @raise on a closed pool
function Hubs:step()
  local problem = closed_problem(self, "step")
  if problem then error(problem, 2) end
  -- the transfers that ended since the last step: the engine driven once
  -- (run(0): step's sockets table, built anew on each call, is not needed here)
  append(self.finished_ids, self.engine:run(0))
  self:_collect()
  self:_schedule(self.rt.monotime())
  local engine_wait, fds, done = self.engine:step()
  append(self.finished_ids, done)
  if #done > 0 then engine_wait = 0 end
  return self:_wait(self.rt.monotime(), engine_wait), fds
end

--- Whether nothing is left to do: no call queued or running, no device provisioning.
-- @treturn boolean
function Hubs:idle()
  return self.counts.queued == 0 and self.counts.provisioning == 0
end

--- Drive the pool, blocking, until it is idle (every call queued is over).
-- @treturn table `stats()`
-- @raise on a closed pool
function Hubs:run()
  local problem = closed_problem(self, "run")
  if problem then error(problem, 2) end
  while not self:idle() do
    local wait = self:step()
    if not self:idle() and wait > 0 then
      append(self.finished_ids, self.engine:run(wait))
    end
  end
  return self:stats()
end

--- Counters: the engine's (`requests`, `connects`, `running`, `free`,
-- `slots`) and the pool's: `devices`, `done` (calls that succeeded),
-- `failed` (calls that failed), `queued` (calls not over), `provisioning`,
-- `provisioned`, `provision_failed` (first provisionings), `reprovisions`
-- (provisionings again within a call).
-- @treturn table
-- @raise on a closed pool
function Hubs:stats()
  local problem = closed_problem(self, "stats")
  if problem then error(problem, 2) end
  local st = self.engine:stats()
  for k, v in pairs(self.counts) do st[k] = v end
  st.devices = #self.devices
  return st
end

--- Drop everything in flight, end every call not over with kind `closed`
-- (through its `on_done`), close the connections, forget the keys. Safe to
-- call more than once; also `__gc` and `__close`.
function Hubs:close()
  local engine = self.engine
  if not engine then return true end
  self.engine = nil
  engine:close()
  self.inflight, self.heap, self.ready, self.paced, self.finished_ids = {}, {}, fifo(), fifo(), {}
  self.warming = {}
  local ended = {}
  for _, dev in ipairs(self.devices) do
    dev.builder:forget()
    local entries = {}
    if dev.call then entries[1] = dev.call end
    while not fifo_empty(dev.queue) do
      local item, on_done = calls_pop(dev.queue)
      entries[#entries + 1] = { item = item, on_done = on_done }
    end
    dev.call, dev.machine, dev.busy = nil, nil, false
    ended[#ended + 1] = { dev = dev, entries = entries }
  end
  self.counts.provisioning = 0
  for _, e in ipairs(ended) do
    for _, entry in ipairs(e.entries) do
      local step = step_of(entry.item)
      self:_end(e.dev, entry, nil, step .. ": the pool was closed before the call ended",
        { kind = "closed", retryable = false, step = step })
    end
  end
  return true
end
Hubs.__close = Hubs.close
Hubs.__gc = Hubs.close

-- The device handle ----------------------------------------------------------

--- A device of the pool (from `pool:add`).
-- @type device

function Device:__tostring()
  return string.format("dps.hubs device(%s, %s)", tostring(self.name), self.phase)
end

-- Queue one call: the failure (queue full, pool closed), or true.
function Device:_queue(item, on_done, prep)
  local pool, step = self.pool, step_of(item)
  if not pool.engine then
    return nil, step .. ": the pool is closed", { kind = "closed", retryable = false, step = step }
  elseif self.open >= pool.queue_limit then
    return nil, string.format("%s: %d calls of this device are not over yet (queue %d): try again later", step,
      self.open, pool.queue_limit), { kind = "queue_full", retryable = true, step = step }
  end
  self.open = self.open + 1
  pool.counts.queued = pool.counts.queued + 1
  calls_push(self.queue, item, on_done, prep)
  if self.phase == "failed" then
    pool:_provision(self) -- provisioned in vain before: once more for this call
  elseif not self.busy and self.phase == "assigned" then
    pool:_wake(self)
  end
  return true
end

local function callback_problem(on_done, what)
  if type(on_done) ~= "function" then
    return what .. ": on_done must be a function, got " .. type(on_done)
  end
end

--- Queue one message (device to cloud), as `hub:send`.
-- @tparam string body the message, as is (at most 256 KB)
-- @tparam[opt] table opts `properties`, `message_id`, `correlation_id`,
--   `content_type`, `content_encoding` (as `hub:send`'s)
-- @tparam function on_done `on_done(true, meta)`, or `on_done(nil, message,
--   info, { step = "send", body = body, opts = opts })`
-- @treturn boolean true: queued
-- @return or nil, message, info (kind `queue_full` or `closed`): not queued
-- @raise on a body that is not a string or too large, bad options, no on_done
function Device:send(body, opts, on_done)
  local headers, problem = hub_message.headers(opts or {}, "send")
  problem = hub_message.body_problem(body, "send") or problem or callback_problem(on_done, "send")
  if problem then error(problem, 2) end
  return self:_queue(opts and { step = "send", body = body, opts = opts } or body, on_done, opts and headers or nil)
end

--- Queue several messages in one request, as `hub:send_batch`.
-- @tparam table messages `{ { body = "…", properties = {…}, … }, … }`
-- @tparam function on_done as `send`'s; the item is `{ step = "send_batch", messages = messages }`
-- @return as `send`'s
-- @raise on an empty list, a bad message, more than 256 KB in all, no on_done
function Device:send_batch(messages, on_done)
  local body, problem = hub_message.encode_batch(messages)
  problem = problem or callback_problem(on_done, "send_batch")
  if problem then error(problem, 2) end
  return self:_queue({ step = "send_batch", messages = messages }, on_done, body)
end

--- Queue taking the next cloud-to-device message, as `hub:receive`.
-- @tparam function on_done `on_done(message, meta)` (the message as
--   `hub:receive`'s), `on_done(false, meta)` when nothing waits, or
--   `on_done(nil, message, info, { step = "receive" })`
-- @return as `send`'s
-- @raise without on_done
function Device:receive(on_done)
  local problem = callback_problem(on_done, "receive")
  if problem then error(problem, 2) end
  return self:_queue({ step = "receive" }, on_done)
end

local function lock_of(msg, what)
  return hub_message.lock_token(msg, "dps.hubs", what)
end

--- Queue completing a message, as `hub:complete`.
-- @tparam table|string msg from `receive`, or its lock token
-- @tparam function on_done as `send`'s (kind `lock_lost` when the lock
--   expired); the item is `{ step = "complete", message = msg }`
-- @return as `send`'s
-- @raise on a message without a usable lock token, no on_done
function Device:complete(msg, on_done)
  local token, problem = lock_of(msg, "complete")
  problem = problem or callback_problem(on_done, "complete")
  if problem then error(problem, 2) end
  return self:_queue({ step = "complete", message = msg }, on_done, token)
end

--- Queue rejecting a message (dead-lettered), as `hub:reject`.
-- @tparam table|string msg
-- @tparam function on_done
-- @return as `send`'s
function Device:reject(msg, on_done)
  local token, problem = lock_of(msg, "reject")
  problem = problem or callback_problem(on_done, "reject")
  if problem then error(problem, 2) end
  return self:_queue({ step = "reject", message = msg }, on_done, token)
end

--- Queue abandoning a message (delivered again), as `hub:abandon`.
-- @tparam table|string msg
-- @tparam function on_done
-- @return as `send`'s
function Device:abandon(msg, on_done)
  local token, problem = lock_of(msg, "abandon")
  problem = problem or callback_problem(on_done, "abandon")
  if problem then error(problem, 2) end
  return self:_queue({ step = "abandon", message = msg }, on_done, token)
end

--- The device's assignment: its registration state and how it came
-- (`{ source = "cache" | "service", … }` as `client:provision`'s, nil for an
-- assignment given to `add`); `nil, message, info` when its last
-- provisioning failed; `nil, message, { kind = "pending" }` while it
-- provisions.
function Device:provisioned()
  if self.phase == "provision" then
    return nil, tostring(self.name) .. ": still provisioning", { kind = "pending", retryable = true }
  elseif self.phase == "failed" then
    return nil, self.message, self.info
  end
  return self.state or { assignedHub = self.builder.hub, deviceId = self.builder.device_id }, self.how
end

--- Calls of this device not over yet (the one running included).
-- @treturn integer
function Device:pending()
  return self.open
end

return Hubs
