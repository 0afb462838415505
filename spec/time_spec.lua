-- Clocks, sleep, and parsing of Retry-After and Date header values.
local core = require "dps.core"

describe("dps.core.retry_after", function()
  local NOW = 1445412480 -- Wed, 21 Oct 2015 07:28:00 GMT

  it("reads delay-seconds, with optional white space", function()
    assert.are.equal(3, core.retry_after("3"))
    assert.are.equal(0, core.retry_after("0"))
    assert.are.equal(120, core.retry_after(" \t120 "))
  end)

  it("reads an HTTP-date relative to now", function()
    assert.are.equal(30, core.retry_after("Wed, 21 Oct 2015 07:28:30 GMT", NOW))
    assert.are.equal(30, core.retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", NOW))
    assert.are.equal(30, core.retry_after("Wed Oct 21 07:28:30 2015", NOW))
  end)

  it("gives 0 for a date in the past", function()
    assert.are.equal(0, core.retry_after("Wed, 21 Oct 2015 07:00:00 GMT", NOW))
  end)

  it("caps huge values instead of overflowing", function()
    assert.are.equal(1e9, core.retry_after("99999999999999999999999999"))
  end)

  it("refuses negative, fractional, garbage, empty and over-long values", function()
    for _, v in ipairs({ "-5", "1.5", "garbage", "", "   ", "5s", "0x10", "3\0", ("1"):rep(200), "12 13" }) do
      assert.is_nil(core.retry_after(v), v)
    end
  end)
end)

describe("dps.core.http_date", function()
  it("parses the IMF-fixdate form", function()
    assert.are.equal(1445412480, core.http_date("Wed, 21 Oct 2015 07:28:00 GMT"))
  end)
  it("refuses what is not a date", function()
    assert.is_nil(core.http_date("12345"))
    assert.is_nil(core.http_date("tomorrow-ish"))
  end)
end)

describe("dps.core clocks", function()
  it("sleeps at least as long as asked, measured on the monotonic clock", function()
    local t0 = core.monotime()
    core.sleep(0.05)
    assert.is_true(core.monotime() - t0 >= 0.05)
  end)

  it("tells wall-clock time close to os.time()", function()
    assert.is_true(math.abs(core.now() - os.time()) < 2)
  end)

  it("refuses negative sleeps", function()
    assert.has_error(function() core.sleep(-1) end)
  end)
end)
