-- Issue 22, item 9: secrets that outlive close(), and core dumps.
--
-- A child process signs with keys (dps.registration_token, and a client of
-- dps.new that signs a register request: no network), closes the client,
-- collects garbage and calls dps.core.forget_keys(); then it waits, and this
-- process reads the child's memory (/proc/PID/mem, every mapping that is
-- readable and writable: heap, stacks, anonymous maps, libraries' data) for
-- each key. The scanner is another process so that it never finds its own
-- needles.
--
-- What is searched, and why that is honest:
-- * The decoded key bytes, and the HMAC pads (key XOR 0x36 / 0x5c, which
--   mbedTLS keeps): only the C core ever holds them (Lua holds base64
--   text), so finding them means C kept a key. Searched as the memory is.
-- * The base64 text: Lua holds it too, as strings nobody can wipe; a freed
--   string's bytes stay in the heap until reused. So the text is searched
--   with the allocator scrubbing what it frees (glibc's perturb, no tcache:
--   GLIBC_TUNABLES), which shows that no live copy is left, in C or in Lua
--   (the copy dps.core keeps to recognise its last key included). Where
--   the child does not allocate with glibc (LuaJIT's own allocator, musl, a
--   static qemu-user) nothing scrubs: there only the decoded bytes are
--   searched. The keys reach the child as two halves in
--   its source, joined at the last moment, so that the whole text is nowhere
--   but where the library puts it.
-- A control child that keeps its client open (without forget_keys) shows the
-- scan finds what the core keeps.
--
-- core.harden_process() (the dps command's first call): the child's
-- /proc/PID/limits shows a core-file limit of 0 (soft and hard), and the
-- kernel's not-dumpable mark shows as the files in its /proc/PID (status,
-- mem, …) being owned by root, where a dumpable process owns its own:
-- checkable for a child that runs as another user than root (setpriv to
-- nobody, when this runs as root).
--
-- Linux only (/proc). Must parse on Lua 5.1, 5.3, 5.4 and LuaJIT.
local core = require "dps.core"
local shell = require "spec.support.shell"
local tls = require "spec.support.tls_server"

local q = shell.quote

local ID_SCOPE = "0ne00000001"
local CHUNK = 1024 * 1024
local MAX_MAPPING = 256 * 1024 * 1024 -- larger ones are sanitizer shadows, not data

local function linux()
  return shell.read("/proc/self/maps") ~= nil
end

-- Random bytes (the keys are new for every run: nothing else can hold them).
local function random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

-- s with every byte XOR k (no bit library on 5.1).
local function xor(s, k)
  local out = {}
  for i = 1, #s do
    local a, b, r, bit = s:byte(i), k, 0, 1
    for _ = 1, 8 do
      if a % 2 ~= b % 2 then r = r + bit end
      a, b, bit = math.floor(a / 2), math.floor(b / 2), bit * 2
    end
    out[i] = string.char(r)
  end
  return table.concat(out)
end

-- A key: its decoded bytes and their base64 text, split in two halves.
local function new_key(name)
  local bytes = random_bytes(32)
  local text = core.base64_encode(bytes)
  return { name = name, bytes = bytes, text = text, half1 = text:sub(1, 22), half2 = text:sub(23) }
end

-- What to look for: { label, needle } (labels name keys, never show them).
local function needles(keys, with_text)
  local list = {}
  for _, k in ipairs(keys) do
    list[#list + 1] = { k.name .. ": decoded bytes", k.bytes }
    list[#list + 1] = { k.name .. ": HMAC inner pad", xor(k.bytes, 0x36) }
    list[#list + 1] = { k.name .. ": HMAC outer pad", xor(k.bytes, 0x5c) }
    if with_text then list[#list + 1] = { k.name .. ": base64 text", k.text } end
  end
  return list
end

-- Every readable and writable mapping of pid: { from, to, name }.
local function writable_mappings(pid)
  local list = {}
  for line in assert(io.open("/proc/" .. pid .. "/maps")):lines() do
    local from, to, perms, name = line:match("^(%x+)%-(%x+) (%S+) %S+ %S+ %S+%s*(.*)$")
    if from and perms:sub(1, 2) == "rw" and name ~= "[vvar]" and name ~= "[vsyscall]" then
      local a, b = tonumber(from, 16), tonumber(to, 16)
      if b - a <= MAX_MAPPING then
        list[#list + 1] = { from = a, to = b, name = name ~= "" and name or "anonymous" }
      end
    end
  end
  return list
end

-- Whether pid allocates with glibc's malloc, whose scrubbing GLIBC_TUNABLES
-- turns on: glibc is loaded (not musl, not a static qemu-user) and the
-- interpreter is no LuaJIT (its own allocator).
local function glibc_malloc(pid)
  local maps = shell.read("/proc/" .. pid .. "/maps") or ""
  return maps:find("/libc%.so%.6\n") ~= nil and not maps:find("libluajit", 1, true)
    and not maps:find("/luajit[^/\n]*\n")
end

-- Labels of the needles found in pid's memory, each with where ("label in
-- [heap]"); and the bytes read.
local function scan(pid, list)
  local longest = 0
  for _, n in ipairs(list) do longest = math.max(longest, #n[2]) end
  local found, seen, total = {}, {}, 0
  for _, m in ipairs(writable_mappings(pid)) do
    local mem = assert(io.open("/proc/" .. pid .. "/mem", "rb"))
    mem:setvbuf("no")
    local tail, at = "", m.from
    while at < m.to do
      local n = math.min(CHUNK, m.to - at)
      local data = mem:seek("set", at) and mem:read(n)
      if data then
        total = total + #data
        local window = tail .. data
        for _, needle in ipairs(list) do
          local label = needle[1] .. " in " .. m.name
          if not seen[label] and window:find(needle[2], 1, true) then
            seen[label] = true
            found[#found + 1] = label
          end
        end
        tail = window:sub(-(longest - 1))
      else
        tail = "" -- a page that cannot be read (a guard, an I/O mapping)
      end
      at = at + n
    end
    mem:close()
  end
  table.sort(found)
  return found, total
end

-- The child's source: signs with key a (dps.registration_token) and group
-- key g (a client of dps.new; its device key is derived from g), then, as
-- opts say, closes the client, collects garbage, calls forget_keys; writes
-- "ready" and waits for the file `go`.
local function child_source(dir, a, g, opts)
  return table.concat({
    "package.path = " .. string.format("%q", package.path),
    "package.cpath = " .. string.format("%q", opts.cpath),
    "local dps = require 'dps'",
    "local core = require 'dps.core'",
    "local function joined(x, y) return x .. y end",
    "local function work()",
    "  local token = dps.registration_token(" .. string.format("%q", ID_SCOPE) .. ", 'secrets-a', joined("
      .. string.format("%q, %q", a.half1, a.half2) .. "), os.time() + 3600)",
    "  assert(token:find('^SharedAccessSignature '))",
    "  local client = assert(dps.new{ id_scope = " .. string.format("%q", ID_SCOPE)
      .. ", registration_id = 'secrets-b', group_key = joined(" .. string.format("%q, %q", g.half1, g.half2)
      .. ") })",
    "  assert(client.builder:dps_request('register', os.time()).headers.authorization)",
    "  if " .. tostring(opts.close) .. " then client:close() end",
    "  return client",
    "end",
    "local kept = work()",
    "if " .. tostring(opts.close) .. " then kept = nil end",
    "collectgarbage() collectgarbage()",
    "if " .. tostring(opts.forget) .. " then core.forget_keys() end",
    "io.write('ready\\n') io.flush()",
    "while not io.open(" .. string.format("%q", dir .. "/go") .. ") do os.execute('sleep 0.05') end",
    "io.write(tostring(kept ~= nil), ' done\\n')",
  }, "\n")
end

-- Runs a child (opts: close, forget, env, prefix, source) until it is
-- ready; returns its pid and a function that lets it finish.
local function start_child(dir, name, source, opts)
  local script = shell.write(dir .. "/" .. name .. ".lua", source)
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  local cmd = (#env > 0 and ("env " .. table.concat(env, " ") .. " ") or "") .. (opts.prefix or "")
    .. q(opts.lua) .. " " .. q(script)
  local pid, log = tls.spawn(dir, name, cmd)
  tls.wait_for(log, "(ready)", name .. " to sign")
  return pid, function()
    shell.write(dir .. "/go", "")
    tls.wait_for(log, "(done)", name .. " to finish")
    os.remove(dir .. "/go")
  end
end

describe("secrets after close (issue 22, item 9)", function()
  local dir, lua, cpath

  setup(function()
    dir = tls.tmpdir("dps-secrets-spec")
    assert(shell.succeeds("chmod 0755 " .. q(dir)))
    -- the memory is read, not the sanitizers: the plain interpreter and build
    lua, cpath = shell.plain()
    math.randomseed(os.time() + math.floor(core.monotime() * 1e6) % 1e6)
  end)

  teardown(function()
    tls.remove_dir(dir)
  end)

  -- Signs in a child, scans it, lets it finish; returns the labels found.
  local function signed_child(name, opts)
    local a, g = new_key("key A"), new_key("group key G")
    local d = { name = "device key D", bytes = core.hmac_sha256(g.bytes, "secrets-b") }
    d.text = core.base64_encode(d.bytes)
    local env = { GLIBC_TUNABLES = "glibc.malloc.tcache_count=0:glibc.malloc.perturb=165" }
    local pid, finish = start_child(dir, name, child_source(dir, a, g, { close = opts.close, forget = opts.forget,
      cpath = cpath }), { lua = lua, env = env })
    local found, total = scan(pid, needles({ a, g, d }, glibc_malloc(pid)))
    finish()
    assert.is_true(total > 0, "nothing of the child's memory could be read")
    return found
  end

  it("no key is in the process's memory after close, collectgarbage and forget_keys", function()
    if not linux() then return pending("needs /proc") end
    assert.same({}, signed_child("forgotten", { close = true, forget = true }))
  end)

  it("the scan finds the keys the core keeps for an open client (the control)", function()
    if not linux() then return pending("needs /proc") end
    local found = signed_child("kept", { close = false, forget = false })
    -- the client's device key, as the HMAC context holds it (OpenSSL keeps
    -- the decoded key, mbedTLS the pads); key A and G were replaced by it
    local decoded = false
    for _, label in ipairs(found) do
      if label:find("^device key D: decoded bytes") or label:find("^device key D: HMAC inner pad") then
        decoded = true
      end
      assert.is_nil(label:find("^key A:") or label:find("^group key G: decoded"), label)
    end
    assert.is_true(decoded, "the device key's bytes were not found: " .. table.concat(found, ", "))
  end)

  it("forget_keys can be called at any time, more than once, and signing goes on", function()
    local key = core.base64_encode(random_bytes(32))
    local token = core.sas_token("scope/registrations/dev", key, 1e9, "registration")
    core.forget_keys()
    core.forget_keys()
    assert.equal(token, core.sas_token("scope/registrations/dev", key, 1e9, "registration"))
    local derived = core.derive_key(key, "dev")
    core.forget_keys()
    assert.equal(derived, core.derive_key(key, "dev"))
  end)

  -- dps.request forgets the core's key when its last builder is forgotten
  it("closing the last client drops the core's key without forget_keys", function()
    if not linux() then return pending("needs /proc") end
    assert.same({}, signed_child("closed", { close = true, forget = false }))
  end)
end)

describe("core.harden_process (issue 22, item 9)", function()
  local dir, lua, cpath

  setup(function()
    dir = tls.tmpdir("dps-harden-spec")
    assert(shell.succeeds("chmod 0755 " .. q(dir)))
    lua, cpath = shell.plain()
  end)

  teardown(function()
    tls.remove_dir(dir)
  end)

  -- A child that calls harden_process (when harden) and waits; as root it
  -- runs as nobody. Returns its core-file limit line, whether
  -- /proc/PID/status is owned by root, and its output.
  local function child(name, harden)
    local prefix = shell.run("id -u") == "0\n" and "setpriv --reuid=65534 --regid=65534 --clear-groups -- " or nil
    local pid, finish = start_child(dir, name, table.concat({
      "package.path = " .. string.format("%q", package.path),
      "package.cpath = " .. string.format("%q", cpath),
      "local core = require 'dps.core'",
      harden and "print('harden', core.harden_process())" or "",
      harden and "print('again', core.harden_process())" or "",
      "io.write('ready\\n') io.flush()",
      "while not io.open(" .. string.format("%q", dir .. "/go") .. ") do os.execute('sleep 0.05') end",
      "io.write('done\\n')",
    }, "\n"), { lua = lua, prefix = prefix })
    local limits = shell.read("/proc/" .. pid .. "/limits") or ""
    local owner = shell.run("stat -c %u /proc/" .. pid .. "/status")
    finish()
    return limits:match("Max core file size[^\n]*"), owner == "0\n", shell.read(dir .. "/" .. name .. ".log")
  end

  it("sets the core-file limit to 0 and marks the process not dumpable", function()
    if not linux() then return pending("needs /proc") end
    if shell.run("id -u") == "0\n" and not shell.succeeds("command -v setpriv >/dev/null") then
      return pending("needs setpriv to run the child as another user")
    end
    local limit, root_owned, out = child("hardened", true)
    assert.matches("harden\ttrue\n", out, 1, true)
    assert.matches("again\ttrue\n", out, 1, true)
    assert.matches("^Max core file size%s+0%s+0%s", limit)
    assert.is_true(root_owned, "/proc/PID/status of the hardened child is not owned by root (still dumpable)")
  end)

  it("the control: a child that does not call it is dumpable", function()
    if not linux() then return pending("needs /proc") end
    if shell.run("id -u") == "0\n" and not shell.succeeds("command -v setpriv >/dev/null") then
      return pending("needs setpriv to run the child as another user")
    end
    local _, root_owned = child("plain", false)
    assert.is_false(root_owned)
  end)
end)
