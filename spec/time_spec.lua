-- Clocks and sleep (the time-valued headers: http_time_spec.lua).
local core = require "dps.core"

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
