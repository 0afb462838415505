--- Many devices provisioned at once, without blocking (`dps.batch`).
--
-- Each device runs the `dps.poll` machine of `client:provision` (the same
-- rules: Retry-After, 429/5xx/409, 5 polls per 10 s, the wrong-clock retry,
-- its own deadline), its requests come from its `dps.request` builder (token
-- renewal, the clock offset) and its answers are read by `dps.response`; all
-- of them travel on one engine (`dps.core.engine`): many transfers in
-- flight, one pool of kept-alive connections, TLS sessions resumed.
--
--    local b = dps.batch{ id_scope = scope, group_key = key, concurrency = 16, rate = 1000, timeout = 300 }
--    b:add("leaf-01", { payload = { site = "north" } })
--    local summary = b:run{ on_result = function(id, state, err, info) … end }
--    -- or, in an event loop: local wait_s, fds = b:step() … until b:done()
--
-- The batch's own rules:
--
-- * Registrations (first ones, and again after a 409, 429 or 5xx) are paced
--   to `rate` per minute (the DPS quota is per unit), and a 429 to any
--   registration holds every registration for its Retry-After (`dps.pace`,
--   shared with `dps.hubs`).
-- * A device that cannot register before its deadline or the batch's (the
--   hold or the pace reach past it) fails at once with kind `timeout`.
-- * Each request is limited to `request_timeout`, and to the time left.
-- * A clock offset one device learns (a 401 with the server's `Date`) signs
--   the requests of the devices that start after it.
-- * With `cache_dir`, each device keeps its assignment in
--   `cache_dir/{registration ID}.json` (`dps.cache`: atomic, 0600, matched by
--   identity): a batch started again after a crash takes the devices that
--   finished from their caches, with no request, and registers only the rest.
--
-- `step` never blocks; `run` blocks until every device is over. Results come
-- back per device: the registration state, or `nil, message, info` as
-- `client:provision`'s.
-- @classmod dps.batch
local core = require "dps.core"
local check = require "dps.check"
local errors = require "dps.errors"
local heap = require "dps.heap"
local cache = require "dps.cache"
local pace = require "dps.pace"
local poll = require "dps.poll"
local request = require "dps.request"
local response = require "dps.response"
local runtime = require "dps.runtime"

local Batch = {}
Batch.__index = Batch

--- Option names and types of `dps.batch`.
-- @local
Batch.OPTIONS = check.extend(runtime.TRANSPORT, {
  id_scope = "string", group_key = "string", endpoint = "string", api_version = "string", token_ttl = "number",
  concurrency = "number", rate = "number", timeout = "number", device_timeout = "number",
  on_result = "function", on_progress = "function", jitter = "function", cache_dir = "string",
})
local ADD_OPTIONS = { payload = "table", symmetric_key = "string" }
local RUN_OPTIONS = { on_result = "function", on_progress = "function" }

local DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT = 16, 300
--- Default `max_body` of the batch's answers (bytes): DPS answers are a few KB,
-- and a batch holds one per slot.
Batch.DEFAULT_MAX_BODY = 64 * 1024
-- Caches read in one step at most: a batch resumed with thousands of them
-- still answers its event loop quickly.
local CACHES_PER_STEP = 64
local DEFAULT_ENDPOINT = "https://global.azure-devices-provisioning.net"

-- Keys out of sight: device → its own key (from add), batch → the group key.
local secrets = setmetatable({}, { __mode = "k" })

--- The misuse in `dps.batch`'s options, or nil.
-- @local
function Batch.options_problem(opts, who)
  who = who or "dps.batch"
  local problem = check.options(opts, Batch.OPTIONS, who) or check.id_scope(opts.id_scope)
  if problem then return problem end
  if opts.group_key ~= nil then
    problem = core.key_problem(opts.group_key)
    if problem then return who .. ": group_key is not base64: it " .. problem end
  end
  local n = opts.concurrency
  if n ~= nil and (n ~= math.floor(n) or n < 1 or n > 1024) then
    return who .. ": concurrency must be an integer from 1 to 1024"
  end
  for _, name in ipairs({ "rate", "timeout", "device_timeout", "token_ttl" }) do
    problem = problem or check.seconds(opts[name], name, true)
  end
  problem = problem or (opts.cache_dir ~= nil and check.string(opts.cache_dir, "cache_dir"))
  if opts.api_version ~= nil and not opts.api_version:match("^[%w%.%-]+$") then
    problem = problem or ("api_version must look like " .. request.DPS_API_VERSION)
  end
  local _, bad = request.endpoint(opts.endpoint or DEFAULT_ENDPOINT)
  return problem or runtime.options_problem(opts) or (bad and who .. ": " .. bad)
end

--- A batch from checked options (`options_problem`), on the runtime `rt`.
-- @local
function Batch.create(opts, rt)
  local concurrency = opts.concurrency or DEFAULT_CONCURRENCY
  rt = runtime.new(rt)
  rt.jitter = opts.jitter or rt.jitter
  local self = setmetatable({
    id_scope = opts.id_scope,
    endpoint = request.endpoint(opts.endpoint or DEFAULT_ENDPOINT),
    api_version = opts.api_version,
    token_ttl = opts.token_ttl,
    concurrency = concurrency,
    pace = pace.new{ rate = opts.rate, jitter = rt.jitter }, -- registrations: the pace and the 429 hold
    timeout = opts.timeout or DEFAULT_TIMEOUT,
    device_timeout = opts.device_timeout or poll.DEFAULT_TIMEOUT,
    request_timeout = opts.request_timeout or runtime.DEFAULT_REQUEST_TIMEOUT,
    on_result = opts.on_result, on_progress = opts.on_progress,
    rt = rt,
    devices = {}, by_id = {},    -- add order; registration ID → device
    queue_head = 1,              -- devices[queue_head…] not started yet
    heap = {}, ready = {},       -- devices waiting for their time; due and waiting for a slot
    inflight = {},               -- engine transfer id → device
    finished_ids = {},           -- transfers the engine reported, not yet handled
    free = concurrency, finished = 0, assigned = 0,
    clock_offset = 0,            -- the last offset a device learnt, for the devices that start after it
    cache_dir = opts.cache_dir,
    from_cache = 0,              -- devices that finished from their caches
  }, Batch)
  secrets[self] = opts.group_key
  local engine_opts = runtime.engine_options(opts)
  engine_opts.max_body = opts.max_body or Batch.DEFAULT_MAX_BODY
  self.engine = rt.transport or core.engine(engine_opts, concurrency)
  return self
end

--- Make a batch (`dps.batch`).
-- @tparam table opts `id_scope`; `group_key` (or a `symmetric_key` per device
--   in `add`); optionally `endpoint`, `api_version`, `token_ttl`,
--   `concurrency` (requests in flight, default 16), `rate` (registrations
--   per minute, default 1000), `timeout` (seconds, overall, default 300),
--   `device_timeout` (seconds per device from its first request, default
--   60), `request_timeout` (seconds for one request, default 30),
--   `connect_timeout` (default 10), `ca_file`, `ca_path`, `proxy`,
--   `user_agent`, `max_body` (bytes of one answer, default 64 KiB),
--   `cache_dir` (a folder for one assignment cache per device: see above),
--   `on_result`, `on_progress` (as `run`'s)
-- @tparam[opt] table rt a runtime for specs and event loops (`dps.runtime`;
--   its `transport` is an engine)
-- @treturn dps.batch
-- @raise on unknown options, wrong types, a bad ID scope or group key
function Batch.new(opts, rt)
  local problem = Batch.options_problem(opts)
  if problem then error(problem, 2) end
  return Batch.create(opts, rt)
end

--- The misuse in `batch:add`'s arguments, or nil.
-- @local
function Batch:add_problem(id, opts)
  local problem = check.options(opts, ADD_OPTIONS, "batch:add") or check.registration_id(id)
  if problem then
    return problem
  elseif not self.engine then
    return "batch:add: the batch is closed"
  elseif self.by_id[id] then
    return "batch:add: " .. id .. " was added already"
  elseif opts.symmetric_key == nil and secrets[self] == nil then
    return "batch:add: " .. id .. " needs a symmetric_key (the batch has no group_key)"
  elseif opts.symmetric_key ~= nil and core.key_problem(opts.symmetric_key) then
    return "batch:add: symmetric_key is not base64: it " .. core.key_problem(opts.symmetric_key)
  end
  local _, bad = request.body(id, opts.payload)
  return bad and "batch:add: " .. bad
end

--- Add a device.
-- @tparam string id the registration ID
-- @tparam[opt] table opts `payload` (table), `symmetric_key` (the device's
--   own key, base64; else the batch's `group_key` derives it)
-- @treturn dps.batch the batch
-- @raise on a bad ID, an ID added twice, a bad payload or key, no key at
--   all, or a closed batch
function Batch:add(id, opts)
  opts = opts or {}
  local problem = self:add_problem(id, opts)
  if problem then error(problem, 2) end
  local dev = { id = id, index = #self.devices + 1, body = request.body(id, opts.payload) }
  secrets[dev] = opts.symmetric_key
  self.devices[dev.index] = dev
  self.by_id[id] = dev
  return self
end

-- A device is over: record, count, tell. With a state, `message` is how it
-- was provisioned (`{ source, … }`, as client:provision's).
function Batch:_finish(dev, state, message, info)
  if dev.over then return end
  dev.over, dev.state = true, state
  if state then dev.how = message else dev.message, dev.info = message, info end
  if dev.builder then dev.builder:forget() end
  dev.builder, dev.machine, dev.body = nil, nil, nil
  secrets[dev] = nil
  self.finished = self.finished + 1
  if state then self.assigned = self.assigned + 1 end
  if self.on_result then self.on_result(dev.id, state, message, info) end
  if self.on_progress then self.on_progress(self.finished, #self.devices) end
end

-- A device starts: its builder (the key derived now, not at add) and machine.
function Batch:_builder(dev)
  if not dev.builder then
    local key = secrets[dev] or core.derive_key(secrets[self], dev.id)
    dev.builder = request.new{ id_scope = self.id_scope, registration_id = dev.id, endpoint = self.endpoint,
      api_version = self.api_version, token_ttl = self.token_ttl, clock_offset = self.clock_offset,
      key = key, credential = self.cache_dir and cache.key_fingerprint(key) }
    secrets[dev] = nil
  end
  return dev.builder
end

function Batch:_start(dev, now)
  self:_builder(dev)
  dev.machine = poll.new{ timeout = self.device_timeout, now = now, jitter = self.rt.jitter,
    clock_offset = self.clock_offset }
end

-- The device's assignment cache, when the batch keeps them.
function Batch:_cache_path(dev)
  return self.cache_dir and (self.cache_dir .. "/" .. dev.id .. ".json")
end

-- A device whose cache answers for it ends now, with no request.
function Batch:_from_cache(dev)
  local path = self:_cache_path(dev)
  local old, ignored = cache.load(path, self:_builder(dev):identity())
  dev.cache_ignored = ignored
  if not old then
    return false
  end
  self.from_cache = self.from_cache + 1
  self:_finish(dev, old.state, { source = "cache", cache = path, written_at = old.written_at,
    clock_offset = dev.builder.clock_offset, cache_written = false })
  return true
end

-- Ticks a device that is due and has a slot; sends, waits or finishes.
function Batch:_tick(dev, now)
  local act = dev.machine:tick(now)
  if act.action == "wait" then
    dev.due = act.at
    return heap.push(self.heap, dev)
  elseif act.action ~= "send" then
    return self:_finish(dev, act.state, act.message, act.info)
  end
  if act.step == "register" then
    self.pace:registered(now)
  end
  dev.builder:set_clock_offset(act.clock_offset)
  local req = dev.builder:dps_request(act.step, self.rt.now(), act.operation_id,
    act.step == "register" and dev.body or nil)
  local limit = math.min(act.timeout, self.request_timeout, self.deadline - now)
  local xfer, message, info = self.engine:request(req.method, req.url, req.headers, req.body, math.max(limit, 0.001))
  if not xfer then
    return self:_answer(dev, errors.transport(act.step, message, info))
  end
  dev.step = act.step
  self.inflight[xfer] = dev
  self.free = self.free - 1
end

-- The machine's verdict on an answer.
function Batch:_answer(dev, result, meta, info)
  local now = self.rt.monotime()
  self.pace:answered(now, dev.step, not result and info or nil)
  local act = dev.machine:answer(now, result, meta, info)
  if act.action == "wait" then
    dev.due = act.at
    heap.push(self.heap, dev)
  elseif act.action == "done" then
    self.clock_offset = act.clock_offset
    self:_finish(dev, act.state, self:_keep(dev, act))
  elseif act.info.retryable and now >= self.deadline then
    -- a failure worth another try, ended by the batch's deadline (the
    -- request was cut at it): the batch's deadline is what ended it
    local _, message, ended = errors.deadline(self.timeout, dev.machine.last_message, dev.machine.last_info)
    ended.cache_ignored = dev.cache_ignored
    self:_finish(dev, nil, message, ended)
  else
    act.info.cache_ignored = dev.cache_ignored
    self:_finish(dev, nil, act.message, act.info)
  end
end

-- How a device that the service assigned was provisioned; its cache
-- written when the batch keeps them.
function Batch:_keep(dev, act)
  local how = { source = "service", result = act.result, clock_offset = act.clock_offset,
    cache = self:_cache_path(dev), cache_ignored = dev.cache_ignored, cache_written = false }
  if how.cache then
    local status, problem = cache.store(how.cache, dev.builder:identity(), act.state,
      self.rt.now() + act.clock_offset)
    how.cache_written = status == "written"
    how.cache_error = problem
  end
  return how
end

-- Finished transfers: taken from the engine, read, answered.
function Batch:_collect()
  local ids = self.finished_ids
  self.finished_ids = {}
  for _, xfer in ipairs(ids) do
    local dev = self.inflight[xfer]
    self.inflight[xfer] = nil
    self.free = self.free + 1
    local status, head, body = runtime.take(self.engine, xfer)
    self:_answer(dev, runtime.reply(response.interpret, dev.step, self.rt.now(), status, head, body))
  end
end

local function append(list, items)
  for _, v in ipairs(items) do list[#list + 1] = v end
end

-- A device that cannot register before `limit` (its deadline or the
-- batch's): kind `timeout`, at once.
function Batch:_cannot_register(dev, limit)
  local _, message, info = self.pace:failure(limit, self.rt.monotime(),
    limit == self.deadline and self.timeout or self.device_timeout,
    dev.machine and dev.machine.last_message, dev.machine and dev.machine.last_info)
  self:_finish(dev, nil, message, info)
end

-- Devices whose time came, then new devices, while slots, pacing and the
-- hold allow.
function Batch:_schedule(now)
  local timers, ready = self.heap, self.ready
  while timers[1] and timers[1].due <= now do
    ready[#ready + 1] = heap.pop(timers)
  end
  local waiting = {}
  for _, dev in ipairs(ready) do
    local registers = dev.machine:next_step() == "register"
    local limit = math.min(dev.machine.deadline, self.deadline)
    if registers and self.pace:too_late(limit) then
      self:_cannot_register(dev, limit)
    elseif self.free > 0 and (not registers or self.pace:allows(now)) then
      self:_tick(dev, now)
    else
      waiting[#waiting + 1] = dev
    end
  end
  self.ready = waiting
  local devices = self.devices
  if self.cache_dir then
    -- devices whose caches answer take no slot and no place in the pace
    local checked = 0
    while devices[self.queue_head] and not devices[self.queue_head].cache_checked and checked < CACHES_PER_STEP do
      local dev = devices[self.queue_head]
      dev.cache_checked, checked = true, checked + 1
      if not self:_from_cache(dev) then break end
      self.queue_head = self.queue_head + 1
    end
  end
  if devices[self.queue_head] and self.pace:too_late(self.deadline) then
    while devices[self.queue_head] do -- none of them can start in time
      self.queue_head = self.queue_head + 1
      self:_cannot_register(devices[self.queue_head - 1], self.deadline)
    end
  end
  -- (with caches, a device starts once its cache was found wanting; at
  -- most runtime.STARTS_PER_STEP new devices a step: each may open a connection)
  local started = 0
  while self.free > 0 and devices[self.queue_head] and self.pace:allows(now) and started < runtime.STARTS_PER_STEP
    and (not self.cache_dir or devices[self.queue_head].cache_checked) do
    local dev = devices[self.queue_head]
    started = started + 1
    self.queue_head = self.queue_head + 1
    self:_start(dev, now)
    self:_tick(dev, now)
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

-- When the batch next wants a step, as seconds from now.
function Batch:_wait(now, engine_wait)
  local head = self.devices[self.queue_head]
  if self.cache_dir and head and not head.cache_checked then
    return 0 -- more caches to read
  end
  local at = self.deadline
  if self.heap[1] then at = math.min(at, self.heap[1].due) end
  if self.free > 0 and (#self.ready > 0 or self.devices[self.queue_head]) then
    at = math.min(at, self.pace:register_at())
  end
  local wait = math.max(at - now, 0)
  if engine_wait then wait = math.min(wait, engine_wait) end
  return wait
end

local function closed_problem(self, what)
  return not self.engine and ("batch:" .. what .. ": the batch is closed") or nil
end

--- Do what can be done now, without blocking.
-- @treturn number seconds after which to call `step` again
-- @treturn table sockets to watch (file descriptor → `"r"`, `"w"` or
--   `"rw"`): call `step` as soon as one is ready
-- @raise on a closed batch
function Batch:step()
  local problem = closed_problem(self, "step")
  if problem then error(problem, 2) end
  local rt = self.rt
  self.deadline = self.deadline or rt.monotime() + self.timeout
  -- the transfers that ended since the last step: the engine driven once
  -- (run(0): step's sockets table, built anew on each call, is not needed here)
  append(self.finished_ids, self.engine:run(0))
  self:_collect()
  local now = rt.monotime()
  if now >= self.deadline then
    self:_expire()
  else
    self:_schedule(now)
  end
  local engine_wait, fds, done = self.engine:step()
  append(self.finished_ids, done)
  if #done > 0 then engine_wait = 0 end
  return self:_wait(rt.monotime(), engine_wait), fds
end

--- Whether every device is over.
function Batch:done()
  return self.finished == #self.devices
end

--- Provision every device added, blocking until every device is over (at
-- most the batch's `timeout`).
-- @tparam[opt] table opts `on_result(id, state, how)` (assigned) or
--   `on_result(id, nil, message, info)` (failed) as each device ends;
--   `on_progress(done, total)`
-- @treturn table `{ total, assigned, failed, from_cache (assigned from their
--   caches, with no request), seconds, requests, connects }`
function Batch:run(opts)
  opts = opts or {}
  local problem = check.options(opts, RUN_OPTIONS, "batch:run") or closed_problem(self, "run")
  if problem then error(problem, 2) end
  self.on_result = opts.on_result or self.on_result
  self.on_progress = opts.on_progress or self.on_progress
  local t0 = self.rt.monotime()
  while not self:done() do
    local wait = self:step()
    if not self:done() and wait > 0 then
      append(self.finished_ids, self.engine:run(wait))
    end
  end
  local stats = self.engine:stats()
  return { total = #self.devices, assigned = self.assigned, failed = self.finished - self.assigned,
    from_cache = self.from_cache, seconds = self.rt.monotime() - t0, requests = stats.requests,
    connects = stats.connects }
end

--- Results so far, in the order of `add`: a list of tables, each
-- `{ id = …, state = registration state, how = … }` for an assigned device
-- (`how` as `result`'s) or `{ id = …, message = …, info = … }` for one that
-- failed (devices still running are left out).
-- @treturn table
function Batch:results()
  local out = {}
  for _, dev in ipairs(self.devices) do
    if dev.over then
      out[#out + 1] = { id = dev.id, state = dev.state, how = dev.how, message = dev.message, info = dev.info }
    end
  end
  return out
end

--- One device's result: its registration state and how it was provisioned
-- (`{ source = "cache" | "service", cache, cache_written, cache_error, … }`,
-- as `client:provision`'s), or `nil, message, info`; while it still runs,
-- `nil, message, { kind = "pending" }`.
-- @tparam string id a registration ID given to `add`
-- @raise on an ID that was never added
function Batch:result(id)
  local dev = self.by_id[id]
  if not dev then
    error("batch:result: " .. tostring(id) .. " was never added", 2)
  elseif not dev.over then
    return nil, dev.id .. ": still provisioning", { kind = "pending", retryable = true }
  elseif dev.state then
    return dev.state, dev.how
  end
  return nil, dev.message, dev.info
end

--- Engine counters: `{ requests, connects, running, free, slots }`.
function Batch:stats()
  local problem = closed_problem(self, "stats")
  if problem then error(problem, 2) end
  return self.engine:stats()
end

--- Drop everything in flight, close the connections, forget the keys. Safe
-- to call more than once.
function Batch:close()
  if self.engine then
    self.engine:close()
    self.engine = nil
  end
  secrets[self] = nil
  for _, dev in ipairs(self.devices) do
    if dev.builder then dev.builder:forget() end
    dev.builder = nil
    secrets[dev] = nil
  end
  return true
end
Batch.__close = Batch.close

-- One device --------------------------------------------------------------

local Provision = {}
Provision.__index = Provision

--- Option names and types of `dps.start_provision`.
-- @local
Batch.START_OPTIONS = check.extend(Batch.OPTIONS, { registration_id = "string", symmetric_key = "string",
  payload = "table" })

--- Provision one device without blocking (`dps.start_provision`): a handle
-- with `step`, `done`, `result`, `stats` and `close`, driven like a batch.
-- @tparam table opts the batch's options plus `registration_id`,
--   `symmetric_key` (or `group_key`) and `payload`
-- @tparam[opt] table rt as `Batch.new`'s
-- @raise on misuse, as `dps.batch` and `batch:add`
function Batch.start(opts, rt)
  local problem = check.options(opts, Batch.START_OPTIONS, "dps.start_provision")
  local batch_opts = { concurrency = 1 }
  for k, v in pairs(opts) do
    if Batch.OPTIONS[k] then batch_opts[k] = v end
  end
  problem = problem or Batch.options_problem(batch_opts, "dps.start_provision")
  if problem then error(problem, 2) end
  local b = Batch.create(batch_opts, rt)
  local add = { payload = opts.payload, symmetric_key = opts.symmetric_key }
  problem = b:add_problem(opts.registration_id, add)
  if problem then
    b:close()
    error(problem:gsub("^batch:add", "dps.start_provision"), 2)
  end
  b:add(opts.registration_id, add)
  return setmetatable({ batch = b, registration_id = opts.registration_id }, Provision)
end

--- Do what can be done now, without blocking (`batch:step`).
-- @treturn number seconds after which to call `step` again
-- @treturn table sockets to watch
function Provision:step()
  if not self.batch.engine then error("provision:step: the provisioning is closed", 2) end
  return self.batch:step()
end

--- Whether the device is over.
function Provision:done()
  return self.batch:done()
end

--- The device's result: its registration state, or `nil, message, info`
-- (kind `pending` while it runs).
function Provision:result()
  return self.batch:result(self.registration_id)
end

--- Engine counters, as `batch:stats`.
function Provision:stats()
  return self.batch:stats()
end

--- Drop the request in flight and close the connection. Safe to call more than once.
function Provision:close()
  return self.batch:close()
end
Provision.__close = Provision.close

function Provision:__tostring()
  return "dps.provision(" .. self.registration_id .. ")"
end

return Batch
