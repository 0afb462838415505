-- Library code must run on Lua 5.1 through 5.4 and LuaJIT.
std = "min"
max_line_length = 120
cache = false

files["spec"] = { std = "+busted" }
-- Tools that run on a known interpreter, never loaded by the library.
files["emulator"] = { std = "max" }
files["bench"] = { std = "max" }
files["spec/support"] = { std = "max" }
files["*.rockspec"] = { std = "+rockspec" }
