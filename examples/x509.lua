-- Provision a device with an X.509 certificate. The TLS handshake
-- authenticates the device, and its registration ID is the certificate's
-- subject CN.
--
--   DPS_ID_SCOPE=0ne… DPS_CERT_FILE=device-chain.pem DPS_KEY_FILE=device.key lua5.4 examples/x509.lua
--
-- DPS_CERT_FILE: the device certificate followed by its intermediate CAs (an
-- enrollment group), or the enrolled self-signed certificate (an individual
-- enrollment). Optional: DPS_KEY_PASSWORD (an encrypted key),
-- DPS_REGISTRATION_ID (checked against the CN), DPS_ENDPOINT, DPS_CA_FILE.
local dps = require "dps"

-- A certificate or key that cannot be used (missing, unreadable, encrypted
-- without the right pass phrase, not a pair, a CN that differs from
-- DPS_REGISTRATION_ID) is a failure to handle, like io.open's: nil, message,
-- info. Only misuse (a wrong option, a bad ID) raises.
local client, problem, why = dps.new{
  id_scope = assert(os.getenv("DPS_ID_SCOPE"), "set DPS_ID_SCOPE"),
  registration_id = os.getenv("DPS_REGISTRATION_ID"),
  cert_file = assert(os.getenv("DPS_CERT_FILE"), "set DPS_CERT_FILE"),
  key_file = assert(os.getenv("DPS_KEY_FILE"), "set DPS_KEY_FILE"),
  key_password = os.getenv("DPS_KEY_PASSWORD"),
  endpoint = os.getenv("DPS_ENDPOINT"),
  ca_file = os.getenv("DPS_CA_FILE"),
}
if not client then
  io.stderr:write(string.format("cannot use the certificate: %s [kind=%s]\n", problem, why.kind))
  os.exit(why.kind == "credentials" and 3 or 2)
end

local state, err, info = client:provision{ timeout = 60 }
client:close()
if not state then
  io.stderr:write(string.format("provisioning failed: %s [kind=%s]\n", err, info.kind))
  os.exit(1)
end
local cert = state.x509 and state.x509.certificateInfo or {}
print(string.format("%s -> hub %s, device %s (%s, SHA-256 %s%s)", state.registrationId, state.assignedHub,
  state.deviceId, tostring(cert.subjectName), tostring(cert.sha256Thumbprint),
  state.x509 and state.x509.enrollmentGroupId and (", group " .. state.x509.enrollmentGroupId) or ""))
