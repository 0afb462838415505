-- dps.core.stat: a file's permission bits, type, size and owner, from C
-- (no `ls` to shell out to); a missing file is a `config` failure.
-- dps.core.read_private: a file only this user can have written, or why not.
-- dps.core.write_atomic beside other writers (issue 22, item 6): each holds
-- a lock on its own temporary file, only temporaries nobody holds are
-- removed, and a syscall trace shows the fsyncs around the rename.
local core = require "dps.core"
local shell = require "spec.support.shell"
local child = require "spec.support.child"

local q = shell.quote
local ROOT = shell.run("id -u"):match("^0%s") ~= nil

describe("dps.core.stat", function()
  local dir
  setup(function() dir = shell.tmpdir() end)
  teardown(function() if dir then shell.succeeds("rm -rf " .. shell.quote(dir)) end end)

  it("gives the permission bits as an integer, and the type, size and owner", function()
    for _, case in ipairs({ { "600", 384 }, { "644", 420 }, { "640", 416 }, { "400", 256 }, { "4755", 2541 },
      { "1777", 1023 }, { "000", 0 } }) do
      local path = shell.write(dir .. "/f" .. case[1], "12345", case[1])
      local facts = assert(core.stat(path))
      assert.are.equal(case[2], facts.mode, case[1])
      assert.are.equal("file", facts.type)
      assert.are.equal(5, facts.size)
    end
    local facts = assert(core.stat(dir))
    assert.are.equal("directory", facts.type)
    assert.are.equal(448, facts.mode) -- mktemp -d: 0700
    local uid = tonumber((shell.run("id -u")))
    assert.are.equal(uid, facts.uid)
    assert.are.equal("other", assert(core.stat("/dev/null")).type)
  end)

  it("follows symbolic links, like ls -lL", function()
    local target = shell.write(dir .. "/target", "x", "640")
    assert(shell.succeeds("ln -s " .. shell.quote(target) .. " " .. shell.quote(dir .. "/link")))
    local facts = assert(core.stat(dir .. "/link"))
    assert.are.equal(416, facts.mode)
    assert.are.equal("file", facts.type)
  end)

  it("returns nil, message, {kind = 'config'} for a missing file, naming the path and the reason", function()
    local facts, message, info = core.stat(dir .. "/missing")
    assert.is_nil(facts)
    assert.are.equal(dir .. "/missing: No such file or directory", message)
    assert.are.same({ kind = "config" }, info)
    facts, message, info = core.stat(dir .. "/target/below")
    assert.is_nil(facts)
    assert.are.equal(dir .. "/target/below: Not a directory", message)
    assert.are.equal("config", info.kind)
  end)

  it("raises for misuse, naming the function", function()
    assert.error_matches(function() core.stat() end, "dps.core.stat")
    assert.error_matches(function() core.stat({}) end, "path must be a string, got table")
    assert.error_matches(function() core.stat("") end, "must not be empty")
    assert.error_matches(function() core.stat(dir .. "/a\0b") end, "NUL")
  end)
end)

describe("dps.core.read_private", function()
  local dir
  setup(function() dir = shell.tmpdir() end)
  teardown(function() if dir then shell.succeeds("rm -rf " .. q(dir)) end end)

  -- read_private(path, max) as {text, reason, info}
  local function read(name, max)
    return { core.read_private(dir .. "/" .. name, max or 100) }
  end

  it("reads a regular file of this user's with no bits for group or others", function()
    shell.write(dir .. "/mine", "hello\0world", "600")
    shell.write(dir .. "/read-only", "r", "400")
    shell.write(dir .. "/empty", "", "600")
    assert.are.same({ "hello\0world" }, read("mine"))
    assert.are.same({ "r" }, read("read-only"))
    assert.are.same({ "" }, read("empty"))
    assert.are.same({ "hello\0world" }, read("mine", 11)) -- exactly max_bytes
  end)

  it("refuses, in plain words and as kind config, what another user could have written", function()
    shell.write(dir .. "/good", "x", "600")
    shell.succeeds("ln -s good " .. q(dir .. "/link") .. " && mkdir " .. q(dir .. "/dir"))
    for mode, words in pairs({ ["644"] = "readable or writable by group or others (mode 0644)",
      ["660"] = "readable or writable by group or others (mode 0660)",
      ["602"] = "readable or writable by group or others (mode 0602)",
      ["610"] = "executable by group or others (mode 0610)" }) do
      shell.write(dir .. "/m" .. mode, "x", mode)
      assert.are.same({ nil, words, { kind = "config", missing = false } }, read("m" .. mode))
    end
    assert.are.same({ nil, "a symbolic link", { kind = "config", missing = false } }, read("link"))
    assert.are.same({ nil, "not a regular file (a directory)", { kind = "config", missing = false } }, read("dir"))
    assert.are.same({ nil, "larger than 0 bytes", { kind = "config", missing = false } }, read("good", 0))
    shell.write(dir .. "/big", string.rep("b", 101), "600")
    assert.are.same({ nil, "larger than 100 bytes", { kind = "config", missing = false } }, read("big"))
    assert.are.same({ nil, "No such file or directory", { kind = "config", missing = true } }, read("missing"))
    assert.are.same({ nil, "No such file or directory", { kind = "config", missing = true } }, read("no/such"))
    assert.are.same({ nil, "Not a directory", { kind = "config", missing = false } }, read("good/below"))
    if ROOT then -- another user's file, even for root
      shell.write(dir .. "/nobody", "x", "600")
      assert(shell.succeeds("chown 65534 " .. q(dir .. "/nobody")))
      assert.are.same({ nil, "owned by uid 65534, not this user (0)", { kind = "config", missing = false } },
        read("nobody"))
    end
  end)

  it("refuses a FIFO at once, without waiting for a writer", function()
    assert(shell.succeeds("mkfifo " .. q(dir .. "/fifo")))
    -- first in a child with a time limit: a read that blocks fails this
    -- spec instead of hanging the suite
    local out, ok = child.run(dir, string.format("print((select(2, require('dps.core').read_private(%q, 100))))",
      dir .. "/fifo"), { prefix = "timeout 10" })
    assert.is_true(ok, out)
    assert.are.equal("not a regular file (a FIFO)\n", out)
    assert.are.same({ nil, "not a regular file (a FIFO)", { kind = "config", missing = false } }, read("fifo"))
  end)

  it("raises for misuse, naming the function", function()
    local path = shell.write(dir .. "/f", "x", "600")
    for _, bad in ipairs({ { nil, 1, "path must be a string, got nil" }, { "", 1, "must not be empty" },
      { "a\0b", 1, "NUL" }, { path, nil, "max_bytes must be a whole number from 0 to 16777216, got nil" },
      { path, "10", "got string" }, { path, -1, "got %-1" }, { path, 1.5, "got 1.5" },
      { path, 16777217, "got 16777217" } }) do
      local ok, err = pcall(core.read_private, bad[1], bad[2])
      assert.is_false(ok)
      assert.matches("dps.core.read_private: ", err)
      assert.matches(bad[3], err)
    end
    assert.are.same({ "x" }, { core.read_private(path, 16777216) })
  end)
end)

describe("dps.core.write_atomic beside other writers", function()
  local dir
  setup(function() dir = shell.tmpdir() end)
  teardown(function() if dir then shell.succeeds("rm -rf " .. q(dir)) end end)

  -- The command that runs the Lua source code as a child: on the plain
  -- interpreter of this run's Lua version (shell.plain: timed, and traced,
  -- which the sanitizers' leak check refuses), with this run's paths.
  local function lua_command(name, code)
    local lua, cpath = shell.plain()
    local script = shell.write(dir .. "/" .. name .. ".lua", "package.path = " .. string.format("%q", package.path)
      .. "\npackage.cpath = " .. string.format("%q", cpath) .. "\n" .. code)
    return q(lua) .. " " .. q(script)
  end

  it("two processes writing 2,000 times each: no write fails, the file is always one whole content", function()
    local path = dir .. "/shared.json"
    local a, b = string.rep("a", 8192), string.rep("b", 4096)
    local code = [[
      local core = require "dps.core"
      local path, mine, other = arg[1], string.rep(arg[2], tonumber(arg[3])), string.rep(arg[4], tonumber(arg[5]))
      local failed, torn, first = 0, 0, "none"
      for _ = 1, 2000 do
        local ok, message = core.write_atomic(path, mine)
        if not ok then failed = failed + 1; first = first == "none" and message or first end
        local f = io.open(path, "rb")
        local text = f and f:read("*a")
        if f then f:close() end
        if text ~= mine and text ~= other then torn = torn + 1 end
      end
      print(failed .. " " .. torn .. " " .. first)
    ]]
    local cmd = lua_command("writer", code)
    local started = core.monotime()
    assert.is_true(shell.succeeds(string.format("%s %s a 8192 b 4096 >%s 2>&1 & %s %s b 4096 a 8192 >%s 2>&1; wait",
      cmd, q(path), q(dir .. "/out.a"), cmd, q(path), q(dir .. "/out.b"))))
    local took = core.monotime() - started
    for _, who in ipairs({ "a", "b" }) do
      local out = shell.read(dir .. "/out." .. who)
      local failed, torn = out:match("^(%d+) (%d+) ")
      assert.are.equal("0 0", failed and (failed .. " " .. torn), "writer " .. who .. ": " .. out)
    end
    local text = shell.read(path)
    assert.is_true(text == a or text == b)
    assert.are.equal(384, core.stat(path).mode)
    assert.is_nil(shell.run("ls -a " .. q(dir)):find(".shared.json.", 1, true)) -- no temporary left
    print(string.format("\n# two writers x 2,000 writes: 0 failed, 0 torn reads, %.1f s", took))
  end)

  it("leaves a temporary file another process holds, removes those nobody holds", function()
    local path = dir .. "/t.json"
    local live, stale = dir .. "/.t.json.Live01", dir .. "/.t.json.Stale1"
    shell.write(live, "a write in progress", "600")
    shell.write(stale, "a killed write's", "600")
    -- holds live's lock (flock, as a writer does) until killed
    local pid = shell.run(string.format("( exec 9<%s; flock -x 9; exec sleep 60 ) >/dev/null 2>&1 & echo $!",
      q(live))):match("%d+")
    for _ = 1, 200 do
      if not shell.succeeds("flock -n -x " .. q(live) .. " true") then break end
      shell.sleep(0.01)
    end
    assert.is_false(shell.succeeds("flock -n -x " .. q(live) .. " true"), "the holder never took the lock")
    local ok, message = core.write_atomic(path, "new")
    shell.succeeds("kill " .. pid .. "; wait " .. pid .. " 2>/dev/null")
    assert.is_true(ok, message)
    assert.are.equal("a write in progress", shell.read(live))
    assert.is_nil(shell.read(stale))
    -- its holder gone, the next write removes it too
    for _ = 1, 200 do
      if shell.succeeds("flock -n -x " .. q(live) .. " true") then break end
      shell.sleep(0.01)
    end
    assert.is_true(core.write_atomic(path, "newer"))
    assert.is_nil(shell.read(live))
    assert.are.equal("newer", shell.read(path))
  end)

  it("syncs the temporary file before the rename, and the folder after (a syscall trace)", function()
    if not shell.succeeds("strace -o /dev/null true 2>/dev/null") then
      pending("strace is missing or cannot trace here (ptrace refused)")
      return
    end
    local path = dir .. "/traced.json"
    local trace = dir .. "/trace"
    local cmd = lua_command("traced", "assert(require('dps.core').write_atomic(arg[1], 'traced'))")
    assert.is_true(shell.succeeds(string.format("strace -f -o %s -e trace=open,openat,flock,fsync,fdatasync,?rename,"
      .. "renameat,renameat2 %s %s", q(trace), cmd, q(path))))
    -- the steps on this file, in order: its temporary's descriptor, then the folder's
    local steps, tmp_fd, dir_fd = {}, nil, nil
    local function fd_of(line) return line:match("%((%d+)") end
    for line in shell.read(trace):gmatch("[^\n]+") do
      -- (glibc opens with openat, musl with open)
      local opened, fd = line:match('open%("([^"]*)", [^)]*%) = (%d+)')
      if not opened then opened, fd = line:match('openat%(AT_FDCWD, "([^"]*)", [^)]*%) = (%d+)') end
      if opened and opened:match("/%.traced%.json%.%w%w%w%w%w%w$") then
        tmp_fd = fd
        steps[#steps + 1] = "create temporary"
      elseif opened == dir and line:find("O_DIRECTORY", 1, true) and #steps > 0 then
        dir_fd = fd
        steps[#steps + 1] = "open folder"
      elseif line:match("flock%(") and fd_of(line) == tmp_fd and line:match("LOCK_EX%) += 0") then
        steps[#steps + 1] = "lock temporary"
      elseif line:match("f[data]*sync%(") and line:match("= 0$") then
        local synced = fd_of(line)
        steps[#steps + 1] = synced == dir_fd and "sync folder" or synced == tmp_fd and "sync temporary"
          or "sync other"
        if synced == dir_fd then dir_fd = nil end
      elseif line:match("rename") and line:find("/.traced.json.", 1, true) and line:find('"' .. path .. '"', 1, true)
        and line:match("= 0$") then
        steps[#steps + 1] = "rename"
        tmp_fd = nil
      end
    end
    assert.are.same({ "create temporary", "lock temporary", "sync temporary", "rename", "open folder",
      "sync folder" }, steps)
  end)
end)
