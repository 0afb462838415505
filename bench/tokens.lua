-- Token benchmark: SAS tokens per second from Lua, and raw HMAC-SHA256 over
-- 64-byte inputs through dps.core, for comparison with `openssl speed`.
-- Prints "name ops_per_second" lines. Run by bench/run.sh.
local dps = require "dps"
local core = require "dps.core"

local KEY = "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=="
local SECONDS = tonumber(arg[1]) or 1
local ONLY = arg[2] -- one benchmark by name (bench/run.sh's Node comparison)

local function rate(name, f)
  if ONLY and name ~= ONLY then return end
  local n, t0 = 0, core.monotime()
  local elapsed
  repeat
    for _ = 1, 1000 do f() end
    n = n + 1000
    elapsed = core.monotime() - t0
  until elapsed >= SECONDS
  print(string.format("%s %.0f", name, n / elapsed))
end

local raw_key = ("k"):rep(64) -- as long as KEY decoded
local msg64 = ("m"):rep(64)
local expiry = 1700000000

rate("registration_token", function() dps.registration_token("0ne00111111", "my-symkey-device", KEY, expiry) end)
rate("core.sas_token", function() core.sas_token("0ne00111111/registrations/my-symkey-device", KEY, expiry,
  "registration") end)
rate("derive_key", function() dps.derive_key(KEY, "my-symkey-device") end)
rate("hmac_sha256_64B", function() core.hmac_sha256(raw_key, msg64) end)
