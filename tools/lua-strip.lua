-- tools/lua-strip.lua < IN.lua > OUT.lua: a Lua source without its comments
-- and indentation, for small installs (a router's flash). Strings, long
-- strings included (the command's help text), are kept byte for byte, and so
-- is the number of lines, so that error messages keep their line numbers.
-- spec/lua_strip_spec.lua proves each library file compiles to the same
-- bytecode before and after. Runs on Lua 5.1 to 5.4 and LuaJIT.
local src = io.read("*a")
local out, n, i = {}, 0, 1
local function emit(s)
  n = n + 1
  out[n] = s
end

-- The level of a long bracket at position p ("[[", "[==["), or nil.
local function long_bracket(p)
  local eq = src:match("^%[(=*)%[", p)
  return eq and #eq
end

local len = #src
while i <= len do
  local c = src:sub(i, i)
  if c == "-" and src:sub(i + 1, i + 1) == "-" then
    local level = src:sub(i + 2, i + 2) == "[" and long_bracket(i + 2)
    if level then -- long comment: drop it, keep its newlines
      local close = "]" .. string.rep("=", level) .. "]"
      local e = src:find(close, i, true)
      local body = src:sub(i, e and e + #close - 1 or len)
      emit((body:gsub("[^\n]", "")))
      i = i + #body
    else -- line comment: drop up to the newline
      local e = src:find("\n", i, true) or len + 1
      i = e
    end
  elseif c == "[" and long_bracket(i) then
    local level = long_bracket(i)
    local close = "]" .. string.rep("=", level) .. "]"
    local e = assert(src:find(close, i, true), "unfinished long string")
    emit(src:sub(i, e + #close - 1))
    i = e + #close
  elseif c == '"' or c == "'" then
    local j = i + 1
    while true do
      local d = src:sub(j, j)
      assert(d ~= "", "unfinished string")
      if d == "\\" then
        j = j + 2
      elseif d == c then
        break
      else
        j = j + 1
      end
    end
    emit(src:sub(i, j))
    i = j + 1
  elseif c == "\n" then
    emit("\n")
    i = i + 1
    local e = src:find("[^ \t]", i) or len + 1 -- the next line's indentation
    i = e
  else
    local e = src:find("[%-%[\"'\n]", i + 1) or len + 1
    local chunk = src:sub(i, e - 1)
    if src:sub(e, e) == "\n" or e > len then chunk = chunk:gsub("[ \t]+$", "") end
    emit(chunk)
    i = e
  end
end
-- trailing blanks before a dropped comment
local text = table.concat(out):gsub("[ \t]+\n", "\n")
io.write(text)
