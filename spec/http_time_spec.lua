-- Retry-After and Date header values (dps.http_time).
local http_time = require "dps.http_time"

local NOW = 1445412480 -- Wed, 21 Oct 2015 07:28:00 GMT

describe("dps.http_time.retry_after", function()
  it("reads delay-seconds, with optional white space", function()
    assert.are.equal(3, http_time.retry_after("3", NOW))
    assert.are.equal(0, http_time.retry_after("0", NOW))
    assert.are.equal(120, http_time.retry_after(" \t120 ", NOW))
  end)

  it("reads an HTTP-date relative to now, in each of its three forms", function()
    assert.are.equal(30, http_time.retry_after("Wed, 21 Oct 2015 07:28:30 GMT", NOW))
    assert.are.equal(30, http_time.retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", NOW))
    assert.are.equal(30, http_time.retry_after("Wed Oct 21 07:28:30 2015", NOW))
  end)

  it("gives 0 for a date in the past", function()
    assert.are.equal(0, http_time.retry_after("Wed, 21 Oct 2015 07:00:00 GMT", NOW))
  end)

  it("caps huge values instead of overflowing", function()
    assert.are.equal(1e9, http_time.retry_after("99999999999999999999999999", NOW))
    assert.are.equal(1e9, http_time.retry_after("Fri, 01 Jan 9999 00:00:00 GMT", NOW))
  end)

  it("refuses negative, fractional, garbage, empty and over-long values", function()
    for _, v in ipairs({ "-5", "1.5", "garbage", "", "   ", "5s", "0x10", "3\0", ("1"):rep(200), "12 13",
                         "1e3", "+5", " 5 5" }) do
      assert.is_nil(http_time.retry_after(v, NOW), v)
    end
    assert.is_nil(http_time.retry_after(nil, NOW))
  end)
end)

describe("dps.http_time.date", function()
  it("reads the IMF-fixdate form", function()
    assert.are.equal(1445412480, http_time.date("Wed, 21 Oct 2015 07:28:00 GMT"))
    assert.are.equal(784111777, http_time.date("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.are.equal(0, http_time.date("Thu, 01 Jan 1970 00:00:00 GMT"))
  end)

  it("reads the obsolete forms, two-digit years as 1970 to 2069", function()
    assert.are.equal(784111777, http_time.date("Sunday, 06-Nov-94 08:49:37 GMT"))
    assert.are.equal(784111777, http_time.date("Sun Nov  6 08:49:37 1994"))
    assert.are.equal(3124224000, http_time.date("Sunday, 01-Jan-69 00:00:00 GMT"))
  end)

  it("counts leap days, and dates past 2038 and 2106 (no 32-bit time_t in the way)", function()
    assert.are.equal(951782400, http_time.date("Tue, 29 Feb 2000 00:00:00 GMT"))
    assert.are.equal(2147483648, http_time.date("Tue, 19 Jan 2038 03:14:08 GMT"))
    assert.are.equal(4102444800, http_time.date("Fri, 01 Jan 2100 00:00:00 GMT"))
    assert.are.equal(4294967296, http_time.date("Sun, 07 Feb 2106 06:28:16 GMT"))
  end)

  it("reads month names in any case and trims white space", function()
    assert.are.equal(1445412480, http_time.date(" Wed, 21 OCT 2015 07:28:00 GMT\t"))
  end)

  it("refuses what is not a date", function()
    for _, v in ipairs({ "12345", "tomorrow-ish", "", "Wed, 21 Oct 2015 07:28:00", "Wed, 21 Foo 2015 07:28:00 GMT",
                         "Wed, 32 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 24:00:00 GMT",
                         "Wed, 21 Oct 2015 07:60:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT\0",
                         "Wed, 21 Oct 2015 07:28:00 GMT" .. (" "):rep(120) .. "x" }) do
      assert.is_nil(http_time.date(v), v)
    end
    assert.is_nil(http_time.date(nil))
    assert.is_nil(http_time.date(42))
  end)
end)
