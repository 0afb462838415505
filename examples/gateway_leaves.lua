-- A gateway provisioning its leaf devices from one enrollment group key:
-- one client (one TLS connection) per leaf, each leaf's key derived from the
-- group key in C, one result line per leaf.
--
--   DPS_ID_SCOPE=0ne… DPS_GROUP_KEY_FILE=/etc/dps/group.key lua5.4 examples/gateway_leaves.lua leaf-01 leaf-02
--
-- The group key comes from DPS_GROUP_KEY_FILE (keep it mode 0600) or
-- DPS_GROUP_KEY. Optional: DPS_ENDPOINT, DPS_CA_FILE. Leaves are provisioned
-- one after another, well under the service's registration quota. Prints one
-- line per leaf, whatever happens to it (`LEAF: assigned to HUB as DEVICE`
-- or `LEAF: FAILED message [kind=…]`; a bad leaf ID or setting is kind
-- `usage`, as the `dps` command calls misuse), then a summary line. Exits 0
-- when every leaf was assigned, 1 otherwise, 2 without leaves.
local dps = require "dps"
local errors = require "dps.errors"

-- The group key, or nil and why not (never quoting the key).
local function group_key()
  local path = os.getenv("DPS_GROUP_KEY_FILE")
  if path and path ~= "" then
    local f, problem = io.open(path, "rb")
    if not f then
      return nil, "DPS_GROUP_KEY_FILE: " .. problem
    end
    local key = (f:read("*a") or ""):match("^%s*(.-)%s*$")
    f:close()
    return key
  end
  local key = os.getenv("DPS_GROUP_KEY")
  if not key or key == "" then
    return nil, "set DPS_GROUP_KEY_FILE or DPS_GROUP_KEY"
  end
  return key
end

-- One leaf: the state, or nil, message, kind. Misuse (a leaf ID that is
-- not a registration ID, a bad setting) raises in dps.new: caught here, so
-- one bad leaf never stops the others.
local function provision(leaf, key, problem)
  if not key then
    return nil, problem, "usage"
  end
  local id_scope = os.getenv("DPS_ID_SCOPE")
  if not id_scope or id_scope == "" then
    return nil, "set DPS_ID_SCOPE", "usage"
  end
  local ok, client, message, info = pcall(dps.new, {
    id_scope = id_scope,
    registration_id = leaf,
    group_key = key,
    endpoint = os.getenv("DPS_ENDPOINT"),
    ca_file = os.getenv("DPS_CA_FILE"),
  })
  if not ok then
    return nil, (tostring(client):gsub("^[^%s]-:%d+: ", "")), "usage"
  elseif not client then
    return nil, message, info.kind -- a local file that cannot be used
  end
  local state
  ok, state, message, info = pcall(client.provision, client, { timeout = 60 })
  client:close()
  if not ok then
    return nil, tostring(state), "usage"
  elseif not state then
    return nil, message, info.kind
  end
  return state
end

local leaves = { ... }
if #leaves == 0 then
  io.stderr:write("usage: gateway_leaves.lua LEAF-ID...\n")
  os.exit(2)
end

local key, problem = group_key()
local failures = 0
for _, leaf in ipairs(leaves) do
  local state, message, kind = provision(leaf, key, problem)
  -- a leaf ID is the caller's text: shown escaped, so each result stays one line
  local name = errors.safe(leaf, 128)
  if state then
    print(string.format("%s: assigned to %s as %s", name, state.assignedHub, state.deviceId))
  else
    failures = failures + 1
    print(string.format("%s: FAILED %s [kind=%s]", name, errors.safe(message), kind))
  end
end
print(string.format("%d of %d leaves assigned", #leaves - failures, #leaves))
os.exit(failures == 0 and 0 or 1)
