--- Real local TLS servers for specs: a throwaway CA with server and client
-- certificates made by the openssl CLI in a temporary directory, background
-- processes (openssl s_server, helper servers) and the ports they listen on.
--
--     local tls = require "spec.support.tls_server"
--     local dir = tls.tmpdir("dps-my-spec")
--     local certs = tls.make_certs(dir)          -- certs.ca, certs.server, …
--     local pid, port = tls.s_server(dir, "www", certs, "-WWW", dir .. "/www")
--     … require("dps.session").new{ ca_file = certs.ca } … "https://localhost:" .. port …
--     tls.stop(pid)
--     tls.remove_dir(dir)
--
-- tls.https_server and tls.connect_proxy run spec/support/https_server.lua
-- (an HTTP/1.1 keep-alive server with test routes, and a CONNECT proxy).
--
-- Shell only, nothing beyond the Lua 5.1 library: loads on 5.1–5.4 and LuaJIT.
local shell = require "spec.support.shell"

local M = {}

M.quote = shell.quote

M.run, M.read_file, M.sleep = shell.succeeds, shell.read, shell.sleep

function M.write_file(path, data)
  shell.write(path, data)
end

--- Wall-clock seconds with sub-second resolution (os.clock is CPU time).
function M.now()
  local p = io.popen("date +%s.%N")
  local s = p:read("*l")
  p:close()
  return tonumber(s)
end

--- A fresh directory /tmp/PREFIX.XXXXXX.
function M.tmpdir(prefix)
  local p = io.popen("mktemp -d " .. M.quote("/tmp/" .. prefix .. ".XXXXXX"))
  local dir = p:read("*l")
  p:close()
  assert(dir and dir:match("^/tmp/."), "mktemp failed")
  return dir
end

--- Removes a directory made by tmpdir (and nothing outside /tmp).
function M.remove_dir(dir)
  if dir and dir:match("^/tmp/[^/]+%.%w+$") then M.run("rm -rf " .. M.quote(dir)) end
end

--- Starts cmd in the background, in directory cwd when given, with its
-- output in DIR/NAME.log.  Returns its pid (cmd is exec'd, so that is the
-- pid of cmd itself) and the log's path.
function M.spawn(dir, name, cmd, cwd)
  local pidfile = dir .. "/" .. name .. ".pid"
  local log = dir .. "/" .. name .. ".log"
  local cd = cwd and ("cd " .. M.quote(cwd) .. " && ") or ""
  assert(M.run("(" .. cd .. "exec " .. cmd .. ") >" .. M.quote(log) .. " 2>&1 </dev/null & echo $! >"
               .. M.quote(pidfile)), "cannot start " .. name)
  return assert(tonumber(M.read_file(pidfile)), "no pid for " .. name), log
end

function M.stop(pid)
  if pid then M.run("kill " .. pid .. " 2>/dev/null") end
end

--- Polls a file until pattern matches (servers write their ports there);
-- returns the captures.
function M.wait_for(path, pattern, what)
  for _ = 1, 200 do
    local s = M.read_file(path)
    local a, b, c, d = (s or ""):match(pattern)
    if a then return a, b, c, d end
    M.sleep(0.05)
  end
  error("timed out waiting for " .. what .. ": " .. tostring(M.read_file(path)))
end

--- Runs `openssl ARGS` in dir; raises with its output on failure.
function M.openssl(dir, args)
  assert(M.run("cd " .. M.quote(dir) .. " && openssl " .. args .. " >>openssl.log 2>&1"),
         "openssl " .. args .. " failed: " .. tostring(M.read_file(dir .. "/openssl.log")))
end

--- Makes a P-256 CA, a server certificate for DNS:localhost and a client
-- certificate (CN dps-spec-device) in dir, valid for two days.  With
-- key_password the client key is also written encrypted.  Returns the paths:
-- { ca, server, server_key, client, client_key, client_key_enc }.
function M.make_certs(dir, key_password)
  M.write_file(dir .. "/ext.cnf", table.concat({
    "[ca]", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier=hash",
    "[server]", "basicConstraints=CA:FALSE", "subjectAltName=DNS:localhost",
    "extendedKeyUsage=serverAuth", "authorityKeyIdentifier=keyid",
    "[client]", "basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth",
    "authorityKeyIdentifier=keyid", "" }, "\n"))
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  M.openssl(dir, "req -new " .. ec .. " -keyout ca.key -out ca.csr -subj /CN=dps-spec-ca")
  M.openssl(dir, "x509 -req -in ca.csr -signkey ca.key -days 2 -extfile ext.cnf -extensions ca -out ca.pem")
  for _, who in ipairs{ "server", "client" } do
    local cn = who == "server" and "localhost" or "dps-spec-device"
    M.openssl(dir, "req -new " .. ec .. " -keyout " .. who .. ".key -out " .. who .. ".csr -subj /CN=" .. cn)
    M.openssl(dir, "x509 -req -in " .. who .. ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
                   .. " -extfile ext.cnf -extensions " .. who .. " -out " .. who .. ".pem")
  end
  local certs = {
    ca = dir .. "/ca.pem",
    server = dir .. "/server.pem", server_key = dir .. "/server.key",
    client = dir .. "/client.pem", client_key = dir .. "/client.key",
  }
  if key_password then
    M.openssl(dir, "pkey -in client.key -traditional -aes256 -passout " .. M.quote("pass:" .. key_password)
                   .. " -out client-enc.key")
    certs.client_key_enc = dir .. "/client-enc.key"
  end
  return certs
end

--- Starts `openssl s_server` with the server certificate on a free port
-- (plus extra arguments such as "-www", "-WWW" or "-Verify 1 -CAfile …"), in
-- directory cwd when given (-WWW serves files from there).  `timeout` ends a
-- forgotten server; stopping it ends s_server too.  Returns pid and port.
function M.s_server(dir, name, certs, extra, cwd)
  local pid, log = M.spawn(dir, name, "timeout 900 openssl s_server -accept 0 -cert " .. M.quote(certs.server)
                           .. " -key " .. M.quote(certs.server_key) .. " " .. (extra or ""), cwd)
  local port = M.wait_for(log, "ACCEPT [^\n]*:(%d+)", "openssl s_server " .. name)
  return pid, tonumber(port)
end

-- The folder of this file, for the server script next to it.
local HERE = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

--- An interpreter with cqueues and luaossl, for spec/support/https_server.lua.
function M.server_lua()
  if not M.found_server_lua then
    for _, lua in ipairs{ "lua5.4", "lua5.3", "lua5.2", "lua5.1", "luajit", "lua" } do
      if M.run(lua .. " -e 'require\"cqueues.socket\" require\"openssl.ssl.context\"' >/dev/null 2>&1") then
        M.found_server_lua = lua
        break
      end
    end
  end
  return assert(M.found_server_lua, "the spec servers need cqueues and luaossl (Debian: lua-cqueues, lua-luaossl)")
end

local function start_script(dir, name, args)
  local q = {}
  for i, a in ipairs(args) do q[i] = M.quote(a) end
  return M.spawn(dir, name, M.server_lua() .. " " .. M.quote(HERE .. "https_server.lua") .. " " .. table.concat(q, " "))
end

--- Starts the keep-alive HTTPS test server with the server certificate.
-- Returns its pid and the ports of the server and of three listeners that
-- misbehave: silent (never answers), reset (resets during the handshake),
-- eof (closes after the ClientHello).
function M.https_server(dir, certs)
  local portfile = dir .. "/https.port"
  local pid = start_script(dir, "https", { "https", portfile, certs.server, certs.server_key })
  local port, silent, reset, eof = M.wait_for(portfile, "^(%d+) (%d+) (%d+) (%d+)", "the https server")
  return pid, { https = port, silent = silent, reset = reset, eof = eof }
end

--- Starts an HTTP CONNECT proxy to 127.0.0.1:target that tunnels
-- (behaviour "tunnel") or refuses ("deny"), logging each request line to
-- log.  Returns its pid and port.
function M.connect_proxy(dir, target, behaviour, log)
  local portfile = dir .. "/" .. behaviour .. ".port"
  local pid = start_script(dir, behaviour, { "proxy", portfile, target, behaviour, log })
  return pid, M.wait_for(portfile, "^(%d+)", "the " .. behaviour .. " proxy")
end

return M
