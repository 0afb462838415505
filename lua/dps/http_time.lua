--- The time-valued headers of an HTTP answer: `Retry-After` and `Date`
-- (RFC 9110 §10.2.3, §5.6.7). Pure arithmetic on Lua numbers, so a date
-- after 2038 reads the same on a 32-bit router (no `time_t`) and on every
-- Lua, LNUM's included.
-- @module dps.http_time

local http_time = {}

-- Longest header value looked at; longer ones are not read.
local MAX_HEADER = 128
-- Longest delay a Retry-After gives, in seconds.
local MAX_DELAY = 1e9

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                 jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

local floor = math.floor

-- The value without optional white space (spaces and tabs), or nil when it
-- is not a string worth reading: empty or too long (NUL bytes match no
-- pattern below).
local function trimmed(value)
  if type(value) ~= "string" or #value > MAX_HEADER then
    return nil
  end
  value = value:match("^[ \t]*(.-)[ \t]*$")
  return value ~= "" and value or nil
end

-- Days from 1970-01-01 to a date of the proleptic Gregorian calendar
-- (H. Hinnant's days_from_civil), in whole numbers that stay exact.
local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function epoch(year, month, day, hh, mm, ss)
  local m = MONTHS[month:lower()]
  year, day, hh, mm, ss = tonumber(year), tonumber(day), tonumber(hh), tonumber(mm), tonumber(ss)
  if not m or day < 1 or day > 31 or hh > 23 or mm > 59 or ss > 60 then
    return nil
  end
  return days_from_civil(year, m, day) * 86400 + hh * 3600 + mm * 60 + ss
end

--- An HTTP-date as seconds since the epoch: the IMF-fixdate form
-- (`Sun, 06 Nov 1994 08:49:37 GMT`) and the obsolete ones RFC 9110 still
-- asks recipients to read (`Sunday, 06-Nov-94 08:49:37 GMT`, asctime's
-- `Sun Nov  6 08:49:37 1994`). The day's name is not checked against the
-- date; month names in any case.
-- @tparam string value the header value
-- @treturn number|nil seconds since the epoch, or nil when it is not a date
function http_time.date(value)
  value = trimmed(value)
  if not value then
    return nil
  end
  local day, month, year, hh, mm, ss =
    value:match("^%a+, (%d%d?) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if day then
    return epoch(year, month, day, hh, mm, ss)
  end
  day, month, year, hh, mm, ss = value:match("^%a+, (%d%d?)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if day then
    -- Two-digit years: 70 to 99 are the 1900s, the rest the 2000s.
    year = tonumber(year)
    return epoch(year + (year < 70 and 2000 or 1900), month, day, hh, mm, ss)
  end
  month, day, hh, mm, ss, year = value:match("^%a%a%a (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  if month then
    return epoch(year, month, day, hh, mm, ss)
  end
  return nil
end

--- Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date.
-- @tparam string value the header value
-- @tparam number now wall-clock seconds since the epoch, for the date form
-- @treturn number|nil the delay (0 for a date not in the future, at most
--   1e9), or nil for anything else (`"-5"`, `"1.5"`, garbage, empty, over
--   128 bytes, NUL bytes)
function http_time.retry_after(value, now)
  value = trimmed(value)
  if not value then
    return nil
  end
  if value:find("^%d+$") then
    return math.min(tonumber(value), MAX_DELAY)
  end
  local date = http_time.date(value)
  if not date then
    return nil
  end
  return math.max(0, math.min(date - now, MAX_DELAY))
end

return http_time
