--- The `dps` command-line tool: `dps provision`, `provision-batch`,
-- `status`, `renew`, `token`, `derive-key`, and the hub's `send`, `receive`,
-- `complete`, `reject`, `abandon` and `upload` (`dps.cli.hub`); the synopsis
-- is in docs/cli.md.
--
-- `bin/dps` is a shim around `main`; busted calls `main` in-process:
--
--    local code = require("dps.cli").main({ "token", "--id-scope", "0ne…", "--registration-id", "dev-01" },
--      { DPS_SYMMETRIC_KEY = key }, { stdout = out, stderr = err })
--
-- Keys come from files or environment variables, never from the command
-- line (every user can read another's command line with `ps`). No output,
-- error or `--verbose` line ever holds a key, a token's signature or a
-- private key; `token` and `derive-key` print their value on stdout because
-- that value is what they are asked for.
--
-- The parts: `dps.cli.args` (commands, flags, parsing), `dps.cli.secrets`
-- (key sources), `dps.cli.commands` (what each command does),
-- `dps.cli.output` (stdout, stderr, failures by kind), `dps.cli.help`.
-- Exit codes and hints come from `dps.cli.output`, by `info.kind`.
-- @module dps.cli
local dps = require "dps"
local args = require "dps.cli.args"
local commands = require "dps.cli.commands"
commands["provision-batch"] = require "dps.cli.batch"
local hub_commands = require "dps.cli.hub"
local help = require "dps.cli.help"
local output = require "dps.cli.output"
local secrets = require "dps.cli.secrets"

local cli = {}

--- Exit codes, as listed by `dps help` and in the README (`dps.cli.output.EXIT`).
-- @table EXIT
cli.EXIT = output.EXIT
local EXIT = cli.EXIT

local usage_error = output.usage_error

local function dispatch(argv, env, term)
  local name = argv[1] ~= nil and tostring(argv[1]) or nil
  local list = table.concat(args.ORDER, ", ")
  if name == nil then
    term.raw_err(help.USAGE)
    return EXIT.usage
  elseif name == "--help" or name == "-h" or (name == "help" and argv[2] == nil) then
    term.out(help.USAGE)
    return EXIT.ok
  elseif name == "--version" or name == "version" then
    term.out(help.version(dps._VERSION))
    return EXIT.ok
  elseif name == "help" then
    local text = help.COMMANDS[tostring(argv[2])]
    if not text then usage_error("no such command; commands: " .. list) end
    term.out(text)
    return EXIT.ok
  end
  local command = args.COMMANDS[name]
  if not command then
    if name:sub(1, 1) == "-" then
      usage_error("give a command first: dps COMMAND [OPTIONS]; commands: " .. list)
    end
    local shown = (#name <= 32 and name:match("^[%w%-_]+$")) and ("'" .. name .. "'") or "given"
    usage_error("unknown command " .. shown .. "; commands: " .. list .. " (see dps --help)")
  end
  command.name = name
  local opts, given = args.parse(argv, 2, command)
  if opts.help then
    term.out(help.COMMANDS[name])
    return EXIT.ok
  end
  term.verbose = opts.verbose == true
  args.resolve_key_file(opts, given, term)
  for _, flag in ipairs(command.required) do
    args.required(opts, flag)
  end
  if command.sources.x509 and not opts["cert-file"] then
    args.required(opts, "registration-id")
  end
  local source = secrets.source(opts, given, env, command, term)
  return (commands[name] or hub_commands[name])(opts, source, term)
end

--- Runs the `dps` command.
-- @tparam table argv the arguments (`arg` of a script: `argv[1]` is the command)
-- @param[opt] env environment: a function `name -> value` or a table; default `os.getenv`
-- @tparam[opt] table stdio `{ stdout = f, stderr = f, stdin = f }`, objects with a `write`
--   (`read` for stdin) method; default `io.stdout`, `io.stderr`, `io.stdin`
-- @treturn integer the exit code (see `EXIT`)
function cli.main(argv, env, stdio)
  argv = argv or {}
  local getenv = os.getenv
  if type(env) == "table" then
    getenv = function(name) return env[name] end
  elseif type(env) == "function" then
    getenv = env
  end
  stdio = stdio or {}
  local term = output.terminal({ stdout = stdio.stdout or io.stdout, stderr = stdio.stderr or io.stderr })
  term.stdin = stdio.stdin or io.stdin -- dps send -
  local ok, result = pcall(dispatch, argv, getenv, term)
  if ok then
    return result
  end
  if output.is_failure(result) then
    term.err(result.message)
    return output.exit_code(result.kind)
  end
  term.err("internal error: " .. output.strip_position(result))
  return EXIT.error
end

return cli
