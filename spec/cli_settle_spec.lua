-- dps complete, reject and abandon LOCK-TOKEN (issue 21): a message that
-- `dps receive` printed and left locked is settled later by its lock token,
-- against the emulator's hub routes (DELETE …/devicebound/{lock}, with
-- `&reject`, and POST …/{lock}/abandon), as the hub saw it; a stale lock
-- exits 1, a bad token exits 2 before any request, and a hub whose host
-- does not resolve names --hub-endpoint.
local cli = require "dps.cli"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local timing = require "spec.support.timing"
local cjson = require("cjson").new()

local KEY = keys.KEY
local q = shell.quote

local function one_line(text)
  assert.are.equal(1, select(2, text:gsub("\n", "")), "not one line:\n" .. text)
  assert.truthy(text:match("^dps: "), text)
  assert.is_nil(text:find("%.lua:%d+:"), text)
end

describe("dps complete, reject and abandon", function()
  local emu, dir, key_file

  setup(function()
    emu = emulator.start{ retry_after = "0", polls_before_assignment = 0, enrollments = {
      { type = "individual", registration_id = "settle-01", symmetric_key = KEY },
      { type = "individual", registration_id = "settle-bad", symmetric_key = KEY },
    } }
    dir = shell.tmpdir("dps-cli-settle")
    key_file = shell.write(dir .. "/device.key", KEY .. "\n", "600")
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then shell.succeeds("rm -rf " .. q(dir)) end
  end)

  -- The command with the device's options (its cache in dir) and `extra`.
  local function run(command, id, extra)
    local a = { command, "--id-scope", emu.id_scope, "--registration-id", id, "--endpoint", emu.endpoint,
      "--ca-file", emu.ca_file, "--hub-endpoint", emu.endpoint, "--symmetric-key-file", key_file,
      "--cache", dir .. "/" .. id .. ".json" }
    for _, v in ipairs(extra or {}) do a[#a + 1] = v end
    local out, err = {}, {}
    local code = cli.main(a, {}, { stdout = { write = function(_, s) out[#out + 1] = s end },
      stderr = { write = function(_, s) err[#err + 1] = s end } })
    return code, table.concat(out), table.concat(err)
  end

  local function queue(id)
    return select(2, emu:admin("GET", "/admin/devices/" .. id .. "/c2d"))
  end

  -- Queues a message and receives it, left locked: its line of JSON.
  local function received(id, body)
    assert.are.equal(201, (emu:admin("POST", "/admin/devices/" .. id .. "/c2d", { body = body })))
    local code, out, err = run("receive", id)
    assert.are.equal(0, code, err)
    local doc = cjson.decode(out)
    assert.are.equal(body, doc.body)
    assert.is_nil(doc.settled)
    return doc
  end

  it("complete: the hub deletes the message; the same token again exits 1 (lock lost)", function()
    local doc = received("settle-01", "reboot")
    local code, out, err = run("complete", "settle-01", { "-v", doc.lock_token })
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("message " .. doc.lock_token .. " completed (the hub deletes it); 1 request on 1 TLS "
      .. "connection to the hub", 1, true), err)
    local state = queue("settle-01")
    assert.are.equal(0, #state.pending)
    assert.are.equal("complete", state.settled[#state.settled].outcome)

    code, out, err = run("complete", "settle-01", { doc.lock_token })
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    one_line(err)
    assert.truthy(err:find("412", 1, true), err)
    assert.truthy(err:find("; the message's lock expired: the hub delivers it again", 1, true), err)
  end)

  it("reject: the hub dead-letters the message", function()
    local doc = received("settle-01", "bad command")
    local code, out, err = run("reject", "settle-01", { doc.lock_token })
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    local state = queue("settle-01")
    assert.are.equal(0, #state.pending)
    assert.are.equal("reject", state.settled[#state.settled].outcome)
  end)

  it("abandon: the hub puts the message back and delivers it again", function()
    local doc = received("settle-01", "later")
    assert.are.equal(1, doc.delivery_count)
    local code, out, err = run("abandon", "settle-01", { doc.lock_token })
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    local state = queue("settle-01")
    assert.are.equal("abandon", state.settled[#state.settled].outcome)
    assert.are.equal(1, #state.pending)
    assert.is_false(state.pending[1].locked)
    code, out, err = run("receive", "settle-01", { "--complete" })
    assert.are.equal(0, code, err)
    assert.are.same({ "later", 2, "complete" }, { cjson.decode(out).body, cjson.decode(out).delivery_count,
      cjson.decode(out).settled })
  end)

  it("a missing, second or bad LOCK-TOKEN exits 2 before any request", function()
    for _, case in ipairs({
      { {}, "give the message's lock token: dps complete … LOCK-TOKEN" },
      { { "a", "b" }, "argument 17 is not an option" },
      { { "" }, "LOCK-TOKEN must not be empty" },
      { { "lock\ttoken" }, "complete: LOCK-TOKEN has a character that is not printable ASCII" },
      { { ("x"):rep(require("dps.hub_response").MAX_LOCK_TOKEN + 1) },
        "complete: LOCK-TOKEN is missing or longer than" },
    }) do
      local code, out, err = run("complete", "settle-bad", case[1])
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find(case[2], 1, true), err)
    end
    shell.sleep(0.2) -- the emulator logs a request as it answers it
    assert.are.equal(0, #emu:requests("settle-bad"))
  end)

  it("each has its help, and dps --help lists them", function()
    local _, overview = run("--help", "x")
    for _, how in ipairs({ "complete", "reject", "abandon" }) do
      assert.truthy(overview:find("\n  " .. how .. " ", 1, true), overview)
      local out = {}
      assert.are.equal(0, cli.main({ how, "--help" }, {}, { stdout = { write = function(_, s) out[#out + 1] = s end },
        stderr = { write = function() end } }))
      assert.truthy(table.concat(out):find("^usage: dps " .. how .. " .*LOCK%-TOKEN\n"), table.concat(out))
    end
  end)

  it("a hub whose host does not resolve: exit 5, and the hint names --hub-endpoint, not --endpoint", function()
    local doc = received("settle-01", "unsettled")
    local a = { "complete", "--id-scope", emu.id_scope, "--registration-id", "settle-01", "--endpoint",
      emu.endpoint, "--ca-file", emu.ca_file, "--hub-endpoint", "https://hub.invalid", "--symmetric-key-file",
      key_file, "--cache", dir .. "/settle-01.json", "--timeout", string.format("%d", math.ceil(timing.margin(5))),
      doc.lock_token }
    local out, err = {}, {}
    local code = cli.main(a, {}, { stdout = { write = function(_, s) out[#out + 1] = s end },
      stderr = { write = function(_, s) err[#err + 1] = s end } })
    err = table.concat(err)
    assert.are.equal(5, code, err)
    assert.are.equal("", table.concat(out))
    one_line(err)
    assert.truthy(err:find("hub.invalid", 1, true), err)
    local hint = "; check --hub-endpoint and DNS\n"
    assert.are.equal(hint, err:sub(-#hint), err)
    assert.are.equal(1, #queue("settle-01").pending)
  end)
end)
