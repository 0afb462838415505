-- Registration state of the DPS emulator: devices, operations, fault queues.
-- Knows nothing about HTTP: it returns (status, body table) pairs.
local util = require "emu_util"
local config = require "emu_config"

local R = {}
R.__index = R

function R.new(cfg)
	return setmetatable({
		cfg = cfg,
		devices = {},   -- lower-cased registration id → device record
		by_device_id = {}, -- device ID → the device record last assigned under it (emu_hub's look-up)
		ops = {},       -- operation id → operation
		counters = {},  -- lower-cased registration id → { register=n, poll=n, lookup=n, issuance=n }
	}, R)
end

--- Consume the next fault of `kind` ("register", "poll", "lookup", or
-- "issuance": one per certificate issued) for a
-- registration id; nil when its queue is used up.
function R:next_fault(registration_id, kind)
	local key = registration_id:lower()
	local c = self.counters[key]
	if not c then
		c = { register = 0, poll = 0, lookup = 0, issuance = 0 }
		self.counters[key] = c
	end
	c[kind] = c[kind] + 1
	return config.scenario_for(self.cfg, registration_id)[kind][c[kind]]
end

local function etag()
	return util.b64encode('"' .. util.uuid() .. '"')
end

-- The terminal registrationState of an operation, stored on the device.
local function complete(self, op)
	local dev = op.device
	local sc = config.scenario_for(self.cfg, op.registration_id)
	local now = util.utc()
	local state = {
		registrationId = op.registration_id,
		createdDateTimeUtc = dev.created,
		lastUpdatedDateTimeUtc = now,
		etag = etag(),
		status = sc.result,
	}
	if sc.result == "assigned" then
		state.assignedHub = dev.moved_to or sc.assigned_hub or self.cfg.hub
		dev.enrollment, dev.hub_gone = op.enrollment, nil -- on its hub again (emu_hub)
		local e = op.enrollment
		state.deviceId = sc.device_id or (e and e.type == "individual" and e.device_id) or op.registration_id
		self.by_device_id[state.deviceId] = dev
		state.substatus = dev.assigned_before and "deviceDataMigrated" or "initialAssignment"
		dev.assigned_before = true
		if op.payload_raw then
			state.payload = util.RAW
		end
	elseif sc.result == "failed" then
		state.errorCode = 400207
		state.errorMessage = "Custom allocation failed with status code: 400"
	end
	local e = op.enrollment
	if e and e.attestation == "x509" then
		local x = { certificateInfo = op.certificate_info }
		if e.type == "group" then x.enrollmentGroupId = e.group_id end
		state.x509 = x
	elseif e and e.type == "group" then
		state.symmetricKey = { enrollmentGroupId = e.group_id }
	end
	op.done = true
	-- the issued chain is in the operation's answer only: the status lookup
	-- (dev.state) never returns it
	dev.state = state
	op.state = state
	if op.chain and sc.result == "assigned" then
		op.state = {}
		for k, v in pairs(state) do op.state[k] = v end
		op.state.issuedCertificateChain = #op.chain > 0 and op.chain or util.EMPTY_ARRAY
	end
	dev.payload_raw = state.payload and op.payload_raw or nil
end

local function operation_body(op)
	if op.done then
		return { operationId = op.id, status = op.state.status, registrationState = op.state }
	end
	return {
		operationId = op.id,
		status = "assigning",
		registrationState = { registrationId = op.registration_id, status = "assigning" },
	}
end

--- Start a registration. `req` has enrollment, certificate_info (X.509),
-- payload_raw (raw JSON text of the request payload, or nil) and, when the
-- request carried a csr, chain (issuedCertificateChain, or nil for none)
-- and leaf (the certificate issued, or nil).
-- Returns status, body, payload_raw (to splice in place of util.RAW).
function R:register(registration_id, req)
	local key = registration_id:lower()
	local dev = self.devices[key]
	if not dev then
		dev = { created = util.utc() }
		self.devices[key] = dev
	end
	local sc = config.scenario_for(self.cfg, registration_id)
	local op = {
		id = util.operation_id(),
		registration_id = registration_id,
		device = dev,
		enrollment = req.enrollment,
		certificate_info = req.certificate_info,
		payload_raw = req.payload_raw,
		chain = req.chain,
		polls_left = sc.polls_before_assignment or self.cfg.polls_before_assignment,
	}
	self.ops[op.id] = op
	dev.last_op = op
	if req.leaf then -- what the emulator issued this device (GET /admin/devices/{id}/certificates)
		dev.issued = dev.issued or {}
		dev.issued[#dev.issued + 1] = req.leaf
	end
	if op.polls_left == 0 then
		complete(self, op)
		return 200, operation_body(op), op.payload_raw
	end
	return 202, { operationId = op.id, status = "assigning" }
end

--- Poll an operation. Returns status, body, payload_raw; nil when unknown.
-- The Nth poll (N = polls_before_assignment) completes the operation.
function R:poll(registration_id, operation_id)
	local op = self.ops[operation_id]
	if not op or op.registration_id:lower() ~= registration_id:lower() then
		return nil
	end
	if not op.done then
		op.polls_left = op.polls_left - 1
		if op.polls_left <= 0 then
			complete(self, op)
		end
	end
	if op.done then
		return 200, operation_body(op), op.payload_raw
	end
	return 202, operation_body(op)
end

--- Device Registration Status Lookup: the last registration's state.
function R:lookup(registration_id)
	local dev = self.devices[registration_id:lower()]
	if not dev then return nil end
	if dev.state then
		return 200, dev.state, dev.payload_raw
	end
	return 200, { registrationId = registration_id, status = "assigning", createdDateTimeUtc = dev.created }
end

--- Retry-After header value for a registration id (false: none).
function R:retry_after(registration_id)
	return config.scenario_for(self.cfg, registration_id).retry_after
end

return R
