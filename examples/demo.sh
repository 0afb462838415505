#!/bin/sh
# `make demo`: the whole provisioning flow, offline. Starts the local DPS
# emulator with fresh certificates and keys, provisions one device by its
# individual key, one by a key derived from a group key and one by an X.509
# certificate, prints the assignments, sends one message from each device to
# the emulator's hub (`dps send`), then onboards one more device by a group
# key that earns its own certificate from DPS (certificate issuance, preview)
# and sends over mutual TLS with it, and stops the emulator.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
work="$top/build/demo"
certs="$top/build/test-certs"
rm -rf "$work"
mkdir -p "$work"

sh emulator/make-certs.sh "$certs" >/dev/null
individual_key=$(openssl rand -base64 32)
group_key=$(openssl rand -base64 64 | tr -d '\n')
earner_key=$(openssl rand -base64 64 | tr -d '\n')

cat >"$work/config.json" <<JSON
{
  "id_scope": "0ne0000DEMO",
  "hub": "demo-hub.azure-devices.net",
  "ready_file": "$work/ready.json",
  "log_file": "$work/requests.jsonl",
  "listeners": [{"host": "127.0.0.1", "port": 0, "cert": "$certs/server.pem", "key": "$certs/server.key"}],
  "client_ca": "$certs/device-root-ca.pem",
  "issuance": {"ca": "$certs/issuance-ca.pem", "ca_key": "$certs/issuance-ca.key", "root": "$certs/issuance-root-ca.pem"},
  "retry_after": "1",
  "polls_before_assignment": 1,
  "enrollments": [
    {"type": "individual", "registration_id": "demo-router-01", "symmetric_key": "$individual_key",
     "device_id": "router-01"},
    {"type": "group", "group_id": "demo-gateways", "symmetric_key": "$group_key"},
    {"type": "group", "group_id": "demo-x509", "attestation": "x509"},
    {"type": "group", "group_id": "demo-earners", "symmetric_key": "$earner_key",
     "certificate_policy": {"validity_days": 30, "curves": ["P-384"]}}
  ]
}
JSON

emulator_lua=lua5.1
command -v luajit >/dev/null 2>&1 && emulator_lua=luajit
$emulator_lua emulator/dps-emulator.lua --config "$work/config.json" 2>"$work/emulator.log" &
emulator_pid=$!
trap 'kill $emulator_pid 2>/dev/null || true; wait $emulator_pid 2>/dev/null || true' EXIT INT TERM

tries=0
until [ -s "$work/ready.json" ]; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ] || ! kill -0 $emulator_pid 2>/dev/null; then
        echo "demo: the emulator did not start:" >&2
        cat "$work/emulator.log" >&2
        exit 1
    fi
    sleep 0.1
done
port=$(lua5.4 -e 'print(math.floor(require("cjson").decode(io.read("a")).ports[1]))' <"$work/ready.json")

export LUA_PATH="$top/lua/?.lua;;" LUA_CPATH="$top/build/5.4/?.so;;"
export DPS_ID_SCOPE=0ne0000DEMO DPS_ENDPOINT="https://localhost:$port" DPS_CA_FILE="$certs/ca.pem"
echo "DPS emulator on $DPS_ENDPOINT (scope $DPS_ID_SCOPE)"

echo "-- individual enrollment (symmetric key):"
DPS_REGISTRATION_ID=demo-router-01 DPS_SYMMETRIC_KEY="$individual_key" lua5.4 examples/provision_individual.lua
echo "-- enrollment group (key derived from the group key):"
DPS_REGISTRATION_ID=demo-leaf-07 DPS_GROUP_KEY="$group_key" lua5.4 examples/provision_group.lua
echo "-- enrollment group (X.509 certificate signed by the device CA):"
DPS_CERT_FILE="$certs/x509-device-01-chain.pem" DPS_KEY_FILE="$certs/x509-device-01.key" \
    lua5.4 examples/x509.lua
echo "-- one message from each device to its hub (dps send; the assignment from DPS, a cache in build/demo):"
send() {
    lua5.4 bin/dps send --id-scope "$DPS_ID_SCOPE" --endpoint "$DPS_ENDPOINT" --ca-file "$DPS_CA_FILE" \
        --hub-endpoint "$DPS_ENDPOINT" --property demo=yes --content-type application/json -v "$@"
}
DPS_SYMMETRIC_KEY="$individual_key" send --registration-id demo-router-01 --cache "$work/router-01.json" \
    '{"hello":"from demo-router-01"}'
DPS_GROUP_KEY="$group_key" send --registration-id demo-leaf-07 --cache "$work/leaf-07.json" \
    '{"hello":"from demo-leaf-07"}'
send --cert-file "$certs/x509-device-01-chain.pem" --key-file "$certs/x509-device-01.key" \
    --cache "$work/x509-device-01.json" '{"hello":"from x509-device-01"}'
echo "-- a device that earns its certificate (group key to onboard, then mutual TLS with the issued one):"
mkdir -m 700 "$work/earner-cert"
DPS_GROUP_KEY="$earner_key" send --registration-id demo-earner-01 --cache "$work/earner-01.json" \
    --issue-cert "$work/earner-cert" '{"hello":"from demo-earner-01, over its issued certificate"}'
lua5.4 -e '
for line in io.lines() do
  local e = require("cjson").decode(line)
  if e.event == "telemetry" then print(string.format("hub got from %s: %s", e.device_id, e.body)) end
end' <"$work/requests.jsonl"
echo "demo: done (requests logged in build/demo/requests.jsonl)"
