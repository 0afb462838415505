-- Loads the known-answer vectors (spec/fixtures/vectors.json).
local cjson = require "cjson"

local f = assert(io.open("spec/fixtures/vectors.json", "rb"))
local vectors = cjson.decode(f:read("*a"))
f:close()
return vectors
