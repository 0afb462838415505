--- A wrong clock: routers without a battery-backed clock boot with a wrong
-- time, and their first SAS token is already expired (or not yet valid).
--
-- The rule: when the service answers 401 and the `Date` header of that
-- answer (from the verified TLS connection) differs from the clock the token
-- was signed with by more than `MAX_SKEW` seconds, sign again with the
-- server's time and retry once; keep the offset for the rest of the session.
-- A 401 with a correct clock stays `auth`. No way around the TLS certificate
-- check is offered: when the clock is so wrong that the server's certificate
-- looks not yet valid or expired, the `tls` failure says the local time and
-- that the clock must be set.
--
-- Pure functions: the times are arguments, so the blocking client, the poll
-- machine and an event loop share them.
-- @module dps.clock
local clock = {}

--- Seconds of difference between the server's clock and ours that a 401 may
-- be blamed on.
clock.MAX_SKEW = 60

--- A time no correct clock shows any more (2025-01-01T00:00:00Z): a local
-- clock before it is certainly wrong.
clock.FLOOR = 1735689600

--- The latest server time believed (2100-01-01T00:00:00Z): a `Date` past it
-- (or before `FLOOR`) is no clock to sign with.
clock.CEILING = 4102444800

--- Whether a server's time is plausible: from `FLOOR` to `CEILING`.
-- @tparam number t seconds since the epoch
-- @treturn boolean
function clock.plausible(t)
  return type(t) == "number" and t >= clock.FLOOR and t <= clock.CEILING
end

--- The new clock offset a failure asks for, or nil.
-- @tparam table info a failure's info: `kind`, and from `dps.response`
--   `server_time` (the answer's `Date`, seconds since the epoch) and
--   `local_time` (the local wall clock when it came, without any offset)
-- @tparam number offset the offset the request was signed with (seconds)
-- @treturn number|nil `server_time - local_time`, when the answer is a 401
--   (kind `auth`, status 401) and the signing clock was off by more than
--   `MAX_SKEW`, and the server's time is plausible (`plausible`: a `Date`
--   before 2025 or after 2099 leaves the 401 as it is)
function clock.correction(info, offset)
  if type(info) ~= "table" or info.kind ~= "auth" or info.status ~= 401 then
    return nil
  end
  local server, here = info.server_time, info.local_time
  if not clock.plausible(server) or type(here) ~= "number" then
    return nil
  end
  if math.abs(server - (here + (offset or 0))) <= clock.MAX_SKEW then
    return nil
  end
  return server - here
end

local function utc(t)
  local ok, text = pcall(os.date, "!%Y-%m-%d %H:%M:%S UTC", math.floor(t))
  return ok and text or string.format("%.0f s since the epoch", t)
end

--- What a `tls` failure adds about the clock: the local time, and that the
-- clock must be set (NTP) when it cannot be right.
-- @tparam number now the local wall clock (seconds since the epoch)
-- @treturn string text to append to the message (starts with "; ")
function clock.tls_note(now)
  if now < clock.FLOOR then
    return "; the local clock says " .. utc(now) .. ", which cannot be right: set the clock (NTP), "
      .. "then try again (a certificate is checked against the local time)"
  end
  return "; the local clock says " .. utc(now) .. ": if that is wrong, set the clock (NTP), "
    .. "since a certificate is checked against the local time"
end

return clock
