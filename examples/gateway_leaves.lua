-- A gateway provisioning its leaf devices from one enrollment group key:
-- one client (one TLS connection) per leaf, each leaf's key derived from the
-- group key in C, one result line per leaf.
--
--   DPS_ID_SCOPE=0ne… DPS_GROUP_KEY_FILE=/etc/dps/group.key lua5.4 examples/gateway_leaves.lua leaf-01 leaf-02
--
-- The group key comes from DPS_GROUP_KEY_FILE (keep it mode 0600) or
-- DPS_GROUP_KEY. Optional: DPS_ENDPOINT, DPS_CA_FILE. Leaves are provisioned
-- one after another, well under the service's registration quota. Exits 0
-- when every leaf was assigned, 1 otherwise.
local dps = require "dps"

local function group_key()
  local path = os.getenv("DPS_GROUP_KEY_FILE")
  if path and path ~= "" then
    local f = assert(io.open(path, "rb"))
    local key = f:read("*a"):match("^%s*(.-)%s*$")
    f:close()
    return key
  end
  return assert(os.getenv("DPS_GROUP_KEY"), "set DPS_GROUP_KEY_FILE or DPS_GROUP_KEY")
end

local leaves = { ... }
if #leaves == 0 then
  io.stderr:write("usage: gateway_leaves.lua LEAF-ID...\n")
  os.exit(2)
end

local key = group_key()
local failures = 0
for _, leaf in ipairs(leaves) do
  local client = dps.new{
    id_scope = assert(os.getenv("DPS_ID_SCOPE"), "set DPS_ID_SCOPE"),
    registration_id = leaf,
    group_key = key,
    endpoint = os.getenv("DPS_ENDPOINT"),
    ca_file = os.getenv("DPS_CA_FILE"),
  }
  local state, err, info = client:provision{ timeout = 60 }
  client:close()
  if state then
    print(string.format("%s: assigned to %s as %s", leaf, state.assignedHub, state.deviceId))
  else
    failures = failures + 1
    print(string.format("%s: FAILED %s [kind=%s]", leaf, err, info.kind))
  end
end
print(string.format("%d of %d leaves assigned", #leaves - failures, #leaves))
os.exit(failures == 0 and 0 or 1)
