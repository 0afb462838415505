-- The secrets sweep, part 2 (a step of spec/suite.sh, after every suite):
-- reads what spec/support/sweep.lua recorded in build/sweep/ and the busted
-- logs in build/logs/, and fails if any message or log holds a secret, a PEM
-- private key or a token signature. It also fails when too little was seen
-- for the sweep to mean anything.
local cjson = require "cjson"
local shell = require "spec.support.shell"

local dir = arg[1] or "build/sweep"
local secrets, outputs, texts = {}, {}, {}

local read = shell.read

local listing = io.popen("ls " .. dir .. "/*.jsonl build/logs/busted-*.log 2>/dev/null")
for path in listing:lines() do
  local text = read(path) or ""
  if path:match("%.jsonl$") then
    for line in text:gmatch("[^\n]+") do
      local ok, entry = pcall(cjson.decode, line)
      if ok and entry.secret then secrets[entry.secret] = true end
      if ok and entry.output then outputs[#outputs + 1] = entry.output end
    end
  else
    texts[#texts + 1] = { path = path, text = text }
  end
end
listing:close()

local nsecrets = 0
for _ in pairs(secrets) do nsecrets = nsecrets + 1 end

local hits = 0
local function sweep(where, text)
  for s in pairs(secrets) do
    if text:find(s, 1, true) then
      hits = hits + 1
      local at = text:find(s, 1, true)
      print(string.format("secret found in %s at byte %d (not printed)", where, at))
    end
  end
  if text:find("PRIVATE KEY-----", 1, true) then
    hits = hits + 1
    print("PEM private key found in " .. where)
  end
  if text:find("sig=[%w%%]+") and not text:find("sig=<", 1, true) then
    hits = hits + 1
    print("token signature found in " .. where .. ": " .. text:sub(1, 120))
  end
end

for i, o in ipairs(outputs) do sweep("message " .. i, o) end
for _, t in ipairs(texts) do sweep(t.path, t.text) end

print(string.format("secrets sweep: %d secrets, %d messages, %d logs, %d hits", nsecrets, #outputs, #texts, hits))
if nsecrets < 5 or #outputs < 50 then
  print("secrets sweep: too little recorded to mean anything (is spec/support/sweep.lua the busted helper?)")
  os.exit(1)
end
os.exit(hits == 0 and 0 or 1)
