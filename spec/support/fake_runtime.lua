-- A runtime (dps.runtime) on a fake clock, for the specs: nothing sleeps, a
-- wait moves the clock; a scripted server answers every request on either
-- transport: a blocking session (the client and the hub) or an engine (the
-- batch), both recording what was sent and when.
--
--    local rt = fake_runtime.new{ answer = function(req) return { status = 200, body = "{}" } end }
--    local client = dps.new(opts, rt:with_session())
--    …  rt.sent[i] = { t, wall, method, url, headers, body, timeout }
--
-- An answer is `{ status, headers = {}, body = "", takes = seconds }` or
-- `{ fail = kind, message = "…", takes = seconds }`; `hang = true` never
-- answers (the request ends at its timeout, kind `timeout`). `answer(req)`
-- may also return nil: the default answer (`opts.default`) then.
local fake = {}

local Fake = {}
Fake.__index = Fake

-- The wall clock at monotonic time 0.
fake.EPOCH = 1800000000

function fake.new(opts)
  opts = opts or {}
  local self = setmetatable({
    mono = opts.mono or 0,
    epoch = opts.epoch or fake.EPOCH,
    answer = opts.answer,
    sent = {}, sleeps = {}, jitters = {},
    pick = opts.jitter or function(low) return low end,
  }, Fake)
  local rt = {}
  rt.now = function() return self.epoch + self.mono end
  rt.monotime = function() return self.mono end
  rt.sleep = function(d)
    assert(d >= 0 and d < 1e9, "slept " .. tostring(d))
    self.sleeps[#self.sleeps + 1] = d
    self.mono = self.mono + d
  end
  rt.jitter = function(low, high)
    self.jitters[#self.jitters + 1] = { low, high }
    return self.pick(low, high)
  end
  self.rt = rt
  return self
end

-- What the server says to `req` (recorded with the time it was sent).
function Fake:_ask(method, url, headers, body, timeout)
  assert(timeout == nil or timeout > 0, "a request with no time left was sent")
  local req = { t = self.mono, wall = self.rt.now(), method = method, url = url, headers = headers, body = body,
    timeout = timeout }
  self.sent[#self.sent + 1] = req
  local a = self.answer and self.answer(req, #self.sent) or nil
  a = a or { status = 200, body = "{}" }
  local takes = a.takes or 0
  if a.hang or takes >= (timeout or math.huge) then
    return req, timeout, nil, "injected: no answer within the request's timeout", { kind = "timeout" }
  elseif a.fail then
    return req, takes, nil, a.message or ("injected " .. a.fail), { kind = a.fail }
  end
  return req, takes, a.status, a.headers or {}, a.body or ""
end

-- The blocking transport (dps.session's interface).
function Fake:session()
  local me = self
  local s = {}
  function s.request(_, method, url, headers, body, timeout)
    local _, takes, status, head, rbody = me:_ask(method, url, headers, body, timeout)
    me.mono = me.mono + takes
    return status, head, rbody
  end
  function s.stats() return { requests = #me.sent, connects = 1 } end
  function s.close() me.closed = true end
  return s
end

--- The runtime with a blocking session as its transport.
function Fake:with_session()
  local rt = {}
  for k, v in pairs(self.rt) do rt[k] = v end
  rt.transport = self:session()
  return rt
end

-- A header table as an engine's block of lines.
local function block(head)
  local lines = {}
  for k, v in pairs(head) do lines[#lines + 1] = k .. ": " .. v .. "\n" end
  return table.concat(lines)
end

-- The non-blocking transport (dps.core.engine's interface): a request ends
-- when the fake clock reaches its time.
function Fake:engine()
  local me = self
  local e = { flying = {}, next_id = 0, closed = false }
  function e.request(_, method, url, headers, body, timeout)
    local _, takes, status, head, rbody = me:_ask(method, url, headers, body, timeout)
    e.next_id = e.next_id + 1
    e.flying[e.next_id] = { at = me.mono + takes, status = status, head = status and block(head) or head,
      body = rbody }
    return e.next_id
  end
  local function due()
    local ids, soonest = {}, nil
    for id, f in pairs(e.flying) do
      if f.at <= me.mono and not f.reported then
        f.reported = true
        ids[#ids + 1] = id
      elseif not f.reported then
        soonest = math.min(soonest or math.huge, f.at - me.mono)
      end
    end
    table.sort(ids)
    return ids, soonest
  end
  function e.step()
    local ids, soonest = due()
    return soonest or 3600, {}, ids
  end
  function e.run(_, wait)
    local ids, soonest = due()
    if #ids > 0 then return ids end -- ended already: no wait, as the engine's run
    me.mono = me.mono + math.min(wait, soonest or wait)
    return (due())
  end
  function e.take(_, id)
    local f = assert(e.flying[id], "take of an unknown transfer")
    e.flying[id] = nil
    return f.status, f.head, f.body
  end
  function e.cancel(_, id) e.flying[id] = nil end
  function e.stats()
    local running = 0
    for _ in pairs(e.flying) do running = running + 1 end
    return { requests = #me.sent, connects = 1, running = running }
  end
  function e.close() e.closed = true end
  return e
end

--- The runtime with an engine as its transport.
function Fake:with_engine()
  local rt = {}
  for k, v in pairs(self.rt) do rt[k] = v end
  rt.transport = self:engine()
  return rt
end

--- Seconds between consecutive requests.
function Fake:gaps()
  local out = {}
  for i = 2, #self.sent do out[i - 1] = self.sent[i].t - self.sent[i - 1].t end
  return out
end

-- Answers ----------------------------------------------------------------

local cjson = require "cjson"

--- An HTTP date of the fake wall clock plus `shift` seconds.
function fake.http_date(wall)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(wall))
end

--- 202 assigning with an operation ID (`id`, default "op-1"; false: none).
function fake.accepted(retry_after, id)
  local doc = { status = "assigning" }
  if id ~= false then doc.operationId = id or "op-1" end
  return { status = 202, headers = { ["retry-after"] = retry_after, ["content-type"] = "application/json" },
    body = cjson.encode(doc) }
end

--- 200 assigned.
function fake.assigned(id)
  return { status = 200, headers = { ["content-type"] = "application/json" },
    body = cjson.encode{ operationId = "op-1", status = "assigned",
      registrationState = { registrationId = id or "dev", assignedHub = "hub.example", deviceId = id or "dev",
        status = "assigned" } } }
end

--- An error answer with the service's body.
function fake.refused(status, retry_after, date)
  return { status = status, headers = { ["retry-after"] = retry_after, date = date,
    ["content-type"] = "application/json" },
    body = cjson.encode{ errorCode = status * 1000 + 1, message = "Injected.", trackingId = "t-1" } }
end

return fake
