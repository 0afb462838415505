--- File upload to the hub's storage (internal: `hub:upload` is the API).
-- Three steps (iot-hub-https.md, "File upload"):
--
-- 1. `POST /devices/{id}/files` asks the hub for a place: the storage host,
--    container, blob name (the device ID in front) and a SAS for that blob
--    (a hub call, with every rule of a hub call: `dps.hub`);
-- 2. the bytes go to storage: in one `PUT` (`x-ms-blob-type: BlockBlob`)
--    when they fit in one block, else block by block (`comp=block`, IDs of
--    equal length) and a block list (`comp=blocklist`). A file is never
--    read in Lua: a request's body is a range of it (`{ file, offset,
--    length }`, the engine's `request`) that the C core reads as it sends,
--    a buffer at a time, so no block is ever whole in memory. Each storage
--    request is a call of `dps.retry` (Retry-After and the back-off, within
--    the step's limit): a block that fails with a retryable answer is sent
--    again, the blocks before it stay where they are;
-- 3. `POST …/files/notifications` tells the hub how it went, always once a
--    place was given: `isSuccess` false with the failure's status (500 when
--    no answer came) after a failure, so the hub frees the upload at once.
--
-- Storage requests go over the hub client's HTTPS session (`dps.session`:
-- any https URL), so the storage host is verified against the same trust
-- (`ca_file`, `ca_path` or the system store) and reached through the same
-- proxy. The SAS is a secret for its lifetime: it lives in the request URLs
-- only, never in a result, a message or an `info`, and storage error texts
-- pass through `dps.errors.safe` (`sig=` redacted).
--
-- Time: each step (the start, one storage request and its retries, the
-- notification) may take the hub client's `timeout`; the upload's own
-- `timeout`, when given, bounds the whole upload (start to block list). The
-- notification always gets its own `timeout`, also after the upload's
-- deadline passed.
-- @module dps.upload
local core = require "dps.core"
local check = require "dps.check"
local errors = require "dps.errors"
local hub_response = require "dps.hub_response"
local response = require "dps.response"
local retry = require "dps.retry"
local runtime = require "dps.runtime"
local json = require("cjson").new()

local upload = {}

--- Bytes per block (and the most sent in one `PUT`), unless `block_size` says.
upload.DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024
--- The largest block storage takes (bytes).
upload.MAX_BLOCK_SIZE = 100 * 1024 * 1024
--- The most blocks of one blob.
upload.MAX_BLOCKS = 50000
--- The longest blob name (bytes; the hub puts the device ID and `/` in front).
upload.MAX_NAME = 1024
--- The blob's content type unless `content_type` says.
upload.DEFAULT_CONTENT_TYPE = "application/octet-stream"
--- From this block size on, a full garbage collection follows each block
-- of `data` (its cost is small beside a block's bytes; without it a few
-- blocks' worth of substrings can pile up before the collector runs).
upload.COLLECT_FROM = 256 * 1024
--- The hub's error codes of a device with too many uploads in progress (10).
upload.LIMIT_CODES = { DeviceMaximumActiveFileUploadLimitExceeded = true, ["403006"] = true }

--- Option names and types of `hub:upload`.
upload.OPTIONS = { name = "string", data = "string", file = "string", block_size = "number",
  on_progress = "function", content_type = "string", timeout = "number" }

-- Checks -------------------------------------------------------------------

--- What is wrong with a blob name, or nil: 1-1024 bytes, no control
-- character, no empty, `.` or `..` path segment (`a//b`, `/a`, `a/../b`).
function upload.name_problem(name)
  if type(name) ~= "string" or name == "" or #name > upload.MAX_NAME then
    return "must be a string of 1-" .. upload.MAX_NAME .. " bytes"
  elseif name:find("[%z\1-\31\127]") then
    return "must not contain control characters"
  end
  for seg in (name .. "/"):gmatch("([^/]*)/") do
    if seg == "" or seg == "." or seg == ".." then
      return "must not have an empty, '.' or '..' path segment"
    end
  end
  return nil
end

local function block_count(size, block_size)
  return math.ceil(size / block_size)
end

--- The misuse in `hub:upload`'s options, or nil (messages start with
-- `upload: ` and the option's name).
function upload.options_problem(opts)
  local problem = check.options(opts, upload.OPTIONS, "upload")
  if problem then return problem end
  problem = upload.name_problem(opts.name)
  if problem then return "upload: name " .. problem end
  if (opts.data == nil) == (opts.file == nil) then
    return "upload: give data (the bytes) or file (a path): one of them"
  end
  if opts.file ~= nil then
    problem = check.string(opts.file, "file")
    if problem then return "upload: " .. problem end
  end
  local size = opts.block_size
  if size ~= nil and (size ~= math.floor(size) or size < 1 or size > upload.MAX_BLOCK_SIZE) then
    return string.format("upload: block_size must be a whole number of bytes from 1 to %d", upload.MAX_BLOCK_SIZE)
  end
  if opts.data and block_count(#opts.data, size or upload.DEFAULT_BLOCK_SIZE) > upload.MAX_BLOCKS then
    return string.format("upload: block_size %d makes more than %d blocks of %d bytes of data",
      size or upload.DEFAULT_BLOCK_SIZE, upload.MAX_BLOCKS, #opts.data)
  end
  local ct = opts.content_type
  if ct ~= nil and (ct == "" or #ct > 256 or ct:find("[^\32-\126]")) then
    return "upload: content_type must be 1-256 printable ASCII characters"
  end
  problem = check.seconds(opts.timeout, "timeout", true)
  return problem and ("upload: " .. problem)
end

-- The hub's answer --------------------------------------------------------------

-- The SAS URL of a place, out of sight (never on the place's table).
local sas_url = setmetatable({}, { __mode = "k" })

local function text_problem(value, max, pattern)
  if type(value) ~= "string" or value == "" or #value > max then
    return "is missing or longer than " .. max .. " characters"
  elseif value:find(pattern) then
    return "has a character that is not allowed"
  end
  return nil
end

-- `host[:port]`: a DNS host name, and a port when the hub names one (an emulator).
local function host_problem(value)
  if type(value) ~= "string" then return "is not a DNS host name" end
  local host, port = value:match("^([^:]*):(%d%d?%d?%d?%d?)$")
  if port and (tonumber(port) < 1 or tonumber(port) > 65535) then return "has a port out of range" end
  return response.host_problem(host or value)
end

-- The blob's path in a URL: each segment percent-encoded.
local function blob_path(name)
  local parts = {}
  for seg in (name .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = core.url_encode(seg) end
  return table.concat(parts, "/")
end

-- The place the hub gave, from its answer: `{ correlation_id, host,
-- container, blob_name }` (and its SAS URL out of sight), or nil, a problem
-- and the correlation ID when that one is usable.
local function place_of(doc)
  local cid = doc.correlationId
  local cid_problem = text_problem(cid, 1024, "[^\33-\126]")
  if cid_problem then return nil, "correlationId " .. cid_problem end
  local problem = host_problem(doc.hostName)
  if problem then return nil, "hostName " .. problem, cid end
  problem = text_problem(doc.containerName, 256, "[^%w%-_%.%$]")
  if problem then return nil, "containerName " .. problem, cid end
  problem = text_problem(doc.blobName, upload.MAX_NAME, "[%z\1-\31\127]")
  if problem then return nil, "blobName " .. problem, cid end
  -- the SAS is never quoted: what is wrong with it is said in words only
  problem = text_problem(doc.sasToken, 4096, "[^%w%-%._~%%&=+/:?]")
  if problem or doc.sasToken:sub(1, 1) ~= "?" then
    return nil, "sasToken " .. (problem or "does not start with '?'"), cid
  end
  local place = { correlation_id = cid, host = doc.hostName, container = doc.containerName,
    blob_name = doc.blobName }
  sas_url[place] = "https://" .. doc.hostName .. "/" .. core.url_encode(doc.containerName) .. "/"
    .. blob_path(doc.blobName) .. doc.sasToken
  return place
end

--- Interpret the hub's answer to the upload start (`POST …/files`, step
-- `upload_start`), as `dps.hub_response.interpret` does a hub answer: the
-- place (`correlation_id`, `host`, `container`, `blob_name`) and its meta,
-- or nil, message, info. A 403 that says the device has too many uploads in
-- progress is kind `quota` (not a refusal of the device: it never
-- provisions again); a 2xx that is no usable place is kind `protocol`
-- (with `info.correlation_id` when that one is usable).
function upload.start_answer(step, status, headers, body, now)
  if status < 200 or status > 299 then
    local _, message, info = hub_response.failure(step, status, headers, body, now)
    if status == 403 and upload.LIMIT_CODES[info.error_code] then
      info.kind, info.retryable = "quota", false
    end
    return nil, message, info
  end
  local ok, doc = pcall(json.decode, body)
  if not ok or type(doc) ~= "table" then
    return errors.protocol(step, string.format("HTTP %d with a body that is not a JSON object (%d bytes)",
      status, #body), status)
  end
  local place, problem, cid = place_of(doc)
  if not place then
    local _, message, info = errors.protocol(step, string.format("HTTP %d: the upload's place is not usable: %s",
      status, problem), status)
    info.correlation_id = cid
    return nil, message, info
  end
  return place, { status = status, headers = headers }
end

-- Storage's answers -----------------------------------------------------------

-- Statuses of storage worth another try: its timeouts, throttling, 5xx.
local function storage_retryable(status)
  return status == 408 or status == 429 or (status >= 500 and status <= 599)
end

--- Interpret one answer of storage (an upload's `PUT`): `true` and the meta
-- for a 2xx, else nil, message, info: `kind` from the status (`auth` for
-- 403 `AuthenticationFailed`: a wrong or expired SAS), `error_code`
-- (storage's `<Code>`, else `x-ms-error-code`), `retry_after`, `retryable`
-- (408, 429 and 5xx), `step`. Storage's text passes through
-- `dps.errors.safe`.
function upload.storage_answer(step, status, headers, body, now)
  if status >= 200 and status <= 299 then
    return true, { status = status, headers = headers }
  end
  local code = body:match("<Code>%s*([%w]+)%s*</Code>") or headers["x-ms-error-code"]
  if type(code) ~= "string" or #code > 64 or not code:find("^%w+$") then code = nil end
  local kind = errors.kind_of_status(status)
  local info = { kind = kind, status = status, error_code = code,
    retry_after = response.retry_after(headers["retry-after"], now), retryable = storage_retryable(status),
    step = step }
  local text = body:match("<Message>([^\n<]*)")
  local message = string.format("%s: storage answered HTTP %d%s%s", step, status, code and (" " .. code) or "",
    text and text ~= "" and (": " .. errors.safe(text, 256)) or "")
  return nil, errors.safe(message, 1024), info
end

-- The bytes ------------------------------------------------------------------

local function config(what)
  return nil, errors.safe("upload: " .. what, 1024), { kind = "config", retryable = false, step = "upload" }
end

--- A file to upload, open: the file and its size, or nil, message, info
-- (kind `config`: missing, unreadable, not a regular file).
-- @tparam string path
function upload.open(path)
  local facts, why = core.stat(path)
  if not facts then return config("cannot read the file: " .. tostring(why)) end
  if facts.type ~= "file" then return config(path .. ": not a regular file (" .. tostring(facts.type) .. ")") end
  local f, open_why = io.open(path, "rb")
  if not f then return config("cannot read the file: " .. tostring(open_why)) end
  return f, facts.size
end

-- What is uploaded: `size`, `body(at, n)` (the request body of the n
-- bytes from offset `at`), `strings` (whether those bodies are strings),
-- `close()`. A file's body is its range, which the core reads as it sends
-- (failing with kind `config` when the file got shorter meanwhile).
local function source_of(opts)
  if opts.data then
    local data = opts.data
    return { size = #data, strings = true, close = function() end,
      body = function(_, at, n) return data:sub(at + 1, at + n) end }
  end
  local f, size, info = upload.open(opts.file)
  if not f then return nil, size, info end
  return { size = size, close = function() f:close() end,
    body = function(_, at, n) return { file = f, offset = at, length = n } end }
end

local function block_id(i)
  return core.base64_encode(string.format("block-%06d", i)) -- 16 characters for every block
end

-- The upload -------------------------------------------------------------------

local Upload = {}
Upload.__index = Upload

-- The limit of the next step (seconds): the hub's timeout, within the
-- upload's deadline; nil when that has passed.
function Upload:limit()
  local limit = self.hub.timeout
  if self.deadline then
    local left = self.deadline - self.rt.monotime()
    if left <= 0 then return nil end
    limit = math.min(limit, left)
  end
  return limit
end

function Upload:late(step)
  return nil, string.format("%s: the upload's timeout (%g s) passed", step, self.opts.timeout),
    { kind = "timeout", retryable = errors.retryable("timeout"), step = step }
end

function Upload:progress(sent)
  if self.opts.on_progress then
    self.opts.on_progress(sent, self.src.size)
  end
end

-- 1. The place, from the hub.
function Upload:start()
  local limit = self:limit()
  if not limit then return self:late("upload_start") end
  return self.hub.call{ step = "upload_start", method = "POST", path = "/files", to = "/files",
    headers = { ["content-type"] = "application/json" }, body = json.encode({ blobName = self.opts.name }),
    interpret = upload.start_answer, timeout = limit }
end

-- One storage request, with its retries (a call of dps.retry).
function Upload:storage(step, query, headers, body)
  local limit = self:limit()
  if not limit then return self:late(step) end
  local rt, request_timeout = self.rt, self.hub.request_timeout
  local req = { step = step, method = "PUT", url = sas_url[self.place] .. (query or ""), headers = headers,
    body = body }
  local machine = retry.call{ step = step, timeout = limit, now = rt.monotime(), jitter = rt.jitter }
  local act = runtime.drive(rt, machine, function(a)
    return runtime.exchange(rt, req, math.min(a.timeout, request_timeout), upload.storage_answer)
  end)
  if act.action == "done" then
    return act.result, act.meta
  end
  return nil, act.message, act.info
end

-- 2. The bytes: `{ status, blocks }`, or nil, message, info.
function Upload:send_all()
  local src, size, block_size, ct = self.src, self.src.size, self.block_size, self.content_type
  self:progress(0)
  if size <= block_size then
    local ok, meta, failure = self:storage("upload_blob", nil,
      { ["x-ms-blob-type"] = "BlockBlob", ["content-type"] = ct, ["x-ms-blob-content-type"] = ct }, src:body(0, size))
    if not ok then return nil, meta, failure end
    self:progress(size)
    return { status = meta.status, blocks = 0 }
  end
  local count, sent, list = block_count(size, block_size), 0, {}
  if count > upload.MAX_BLOCKS then
    return nil, string.format("upload: %d bytes make more than %d blocks of %d bytes: give a larger block_size",
      size, upload.MAX_BLOCKS, block_size), { kind = "too_large", retryable = false, step = "upload" }
  end
  for i = 1, count do
    local n = math.min(block_size, size - sent)
    local id = block_id(i)
    local ok, problem, failure = self:storage("upload_block", "&comp=block&blockid=" .. core.url_encode(id),
      { ["content-type"] = "application/octet-stream" }, src:body(sent, n))
    if not ok then
      failure.block = i
      return nil, problem, failure
    end
    if src.strings and block_size >= upload.COLLECT_FROM then
      -- this block's substring is collected before the next is made: one
      -- block's copy is alive at a time, not a heap's growth of them
      collectgarbage()
    end
    list[i] = "<Latest>" .. id .. "</Latest>"
    sent = sent + n
    self:progress(sent)
  end
  local body = '<?xml version="1.0" encoding="utf-8"?><BlockList>' .. table.concat(list) .. "</BlockList>"
  local ok, meta, failure = self:storage("upload_block_list", "&comp=blocklist",
    { ["content-type"] = "application/xml", ["x-ms-blob-content-type"] = ct }, body)
  if not ok then return nil, meta, failure end
  return { status = meta.status, blocks = count }
end

-- 3. The notification: true, or nil, message, info.
function Upload:notify(success, status, description)
  return self.hub.call{ step = "upload_notify", method = "POST", path = "/files/notifications",
    to = "/files/notifications", headers = { ["content-type"] = "application/json" },
    body = json.encode({ correlationId = self.place.correlation_id, isSuccess = success, statusCode = status,
      statusDescription = errors.safe(description, 256) }) }
end

-- After a failure with a place: the hub is told; the failure says whether it was.
function Upload:failed(message, info)
  local status = info.step ~= "upload_start" and info.status or 500
  local told, why, why_info = self:notify(false, status, message)
  info.correlation_id, info.notified = self.place.correlation_id, told == true
  if not told then
    info.notify_info = why_info
    message = message .. "; the hub could not be told that the upload failed (" .. tostring(why) .. ")"
  end
  return nil, errors.safe(message, 2048), info
end

function Upload:go()
  local place, message, info = self:start()
  if not place then
    if info and info.correlation_id then -- a place the device cannot use: still the hub's to free
      self.place = { correlation_id = info.correlation_id }
      return self:failed(message, info)
    end
    return nil, message, info
  end
  self.place = place
  local ok, sent, problem, failure = pcall(self.send_all, self)
  if not ok then -- a raise (from on_progress): the hub is told, then it goes on
    self:notify(false, 500, "the upload was interrupted on the device")
    error(sent, 0)
  end
  if not sent then
    return self:failed(problem, failure)
  end
  local told, why, why_info = self:notify(true, sent.status, "OK")
  local result = { blob_name = place.blob_name, size = self.src.size, correlation_id = place.correlation_id,
    blocks = sent.blocks }
  if not told then
    why_info.uploaded, why_info.blob_name = true, place.blob_name
    return nil, errors.safe("the blob " .. place.blob_name .. " was uploaded, but the hub could not be told: "
      .. tostring(why), 2048), why_info
  end
  return result
end

--- Upload, with checked options (`options_problem`), through a hub client:
-- `hub` = `{ rt (the runtime), timeout, request_timeout, call }`, where
-- `call(c)` makes one hub call with the hub's rules (`c` as `dps.request`'s
-- `hub_request` takes it, plus `interpret` and `timeout`).
-- @treturn table `{ blob_name, size, correlation_id, blocks }` (`blocks` 0:
--   one `PUT`)
-- @return or nil, message, info (`info.kind`, `step`; after the hub gave a
--   place also `correlation_id` and `notified`; `block` for a block)
function upload.run(hub, opts)
  local src, message, info = source_of(opts)
  if not src then return nil, message, info end
  local self = setmetatable({ hub = hub, rt = hub.rt, opts = opts, src = src,
    block_size = opts.block_size or upload.DEFAULT_BLOCK_SIZE,
    content_type = opts.content_type or upload.DEFAULT_CONTENT_TYPE,
    deadline = opts.timeout and hub.rt.monotime() + opts.timeout }, Upload)
  local results = { pcall(self.go, self) }
  src:close()
  if not results[1] then error(results[2], 0) end
  return results[2], results[3], results[4]
end

return upload
