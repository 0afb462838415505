--- The `dps` command's help texts: the overview (`dps --help`) and each
-- command's options (`dps COMMAND --help`).
-- @module dps.cli.help
local help = {}

--- The overview, with the key sources and the exit codes.
help.USAGE = [[
usage: dps COMMAND [OPTIONS]

Provision devices through the Azure IoT Hub Device Provisioning Service.

Commands:
  provision    register the device and wait for its assignment; prints the
               registration state as JSON (with --cache: once, then from the
               cache)
  provision-batch  provision every device of a list at once (a group key);
               one JSON line per device
  status       look up the device's registration (no new registration);
               prints the registration state as JSON
  renew        earn a new certificate from DPS now (--issue-cert DIR; preview)
  token        print a DPS SAS token for the device
  derive-key   print the device key derived from an enrollment group key
  send         send one message to the device's hub (provisions first;
               with --cache once, then from the cache)
  receive      print one cloud-to-device message as JSON (nothing: none
               waits); --complete, --reject or --abandon settles it
  complete     settle a message receive printed, by its lock token: done
               with it, the hub deletes it
  reject       settle it so: dead-lettered, never delivered again
  abandon      settle it so: put back, delivered again
  upload       upload a file to the hub's storage (provisions first); prints
               the blob's name as JSON

Keys are never taken from the command line (every user can read it with ps):
  --symmetric-key-file FILE  individual enrollment key   (or DPS_SYMMETRIC_KEY)
  --group-key-file FILE   enrollment group key; the     (or DPS_GROUP_KEY)
                          device key is derived from it
  --cert-file FILE --key-file FILE   X.509 certificate (PEM, with its chain)
                          and its private key; an encrypted key's pass phrase
                          comes from --key-password-file FILE or DPS_KEY_PASSWORD
Old names still accepted: --cert (--cert-file), --cert-key (--key-file), and
--key-file without --cert-file (--symmetric-key-file).

Exit codes:
  0  success
  1  the service refused the request (400, 404, 409, 429, 5xx, bad answer)
  2  usage: a mistake on the command line or in an option's value
  3  local credentials: key, certificate or pass phrase missing or unusable
  4  authentication refused by the service (401, 403)
  5  network, DNS, proxy, TLS, or no decision within --timeout
  6  the registration ended "failed" or "disabled"

dps COMMAND --help shows the options of a command; dps --version the version.
]]

local CONNECTION = [[
  --id-scope S            the DPS instance's ID scope (required)
  --registration-id R     the device's registration ID (required, except with
                          --cert-file: then it is the certificate's subject CN)
  --symmetric-key-file FILE  individual enrollment key, base64 (or DPS_SYMMETRIC_KEY)
  --group-key-file FILE   enrollment group key, base64 (or DPS_GROUP_KEY)
  --cert-file FILE        X.509 device certificate, PEM, with its chain
  --key-file FILE         the certificate's private key, PEM
  --key-password-file FILE  pass phrase of an encrypted --key-file (or DPS_KEY_PASSWORD)
  --endpoint URL          default https://global.azure-devices-provisioning.net
  --ca-file FILE          PEM bundle of CAs to trust (adds to libcurl's default
                          CA directory where it has one, as on Debian)
  --ca-path DIR           directory of hashed CA certificates
  --proxy URL             http://host:port, through HTTP CONNECT
  --api-version V         default 2021-06-01
%s  -v, --verbose           progress on stderr (never a key or token)
]]

-- The time limits, told alike by every command that talks to a server (as
-- the Lua options timeout and request_timeout mean them): the default of
-- --timeout after the first line.
local function timeouts(default)
  return "  --timeout SECONDS       overall limit of each call, its retries and waits\n"
    .. "                          included " .. default .. "\n"
    .. "  --request-timeout SECONDS  limit of one request (default 30)\n"
end

-- The help of complete, reject and abandon: `what` it does to the message.
local function settle_help(name, what)
  return "usage: dps " .. name .. " --id-scope S --registration-id R KEY-SOURCE [OPTIONS] LOCK-TOKEN\n\n"
    .. what .. "\n\n"
    .. "LOCK-TOKEN: the lock_token of a message that dps receive printed and left\n"
    .. "locked (receive without a flag that settles it), before the lock expires.\n"
    .. "Provisions first (from --cache when it matches), as receive does; prints\n"
    .. "nothing. A lock that expired, or whose message is settled already, exits 1\n"
    .. "(the message comes again); other exit codes as for receive.\n\n"
    .. CONNECTION:format(timeouts("(default 60 to provision, 30 per hub call)"))
    .. "  --cache FILE            the assignment cache (see dps provision --help)\n"
    .. "  --payload JSON          the registration's payload when it provisions\n"
    .. "  --hub-endpoint URL      connect here instead of the assigned hub\n"
    .. "  --issue-cert DIR        as for send (also --curve, --renew-at)\n"
end

--- Each command's help text, by command name.
-- @table COMMANDS
help.COMMANDS = {
  ["provision-batch"] = "usage: dps provision-batch --id-scope S --group-key-file F --ids FILE [OPTIONS]\n\n"
    .. "Provisions every device of FILE (one registration ID per line, optionally a\n"
    .. "tab and a JSON payload) at once, and prints one line of JSON per device as\n"
    .. "it ends. Exit status 0 only when every device was assigned.\n\n"
    .. "  --concurrency N         requests in flight (default 16)\n"
    .. "  --rate N                registrations per minute (default 1000)\n"
    .. "  --cache-dir DIR         keep each device's assignment in DIR/ID.json; run\n"
    .. "                          again (after a crash), the devices found there are\n"
    .. "                          done with no request, and only the rest register\n"
    .. timeouts("(the whole batch; default 300)")
    .. "  --endpoint, --ca-file, --ca-path, --proxy, --api-version, --verbose as for provision\n",
  provision = "usage: dps provision --id-scope S --registration-id R KEY-SOURCE [OPTIONS]\n\n"
    .. "Registers the device, polls until the service decides, and prints the\n"
    .. "registration state (assignedHub, deviceId, …) as one line of JSON.\n\n"
    .. CONNECTION:format(timeouts("(default 60)"))
    .. "  --payload JSON          a JSON object sent as the registration's payload,\n"
    .. "                          e.g. '{\"modelId\":\"dtmi:com:example:Thermostat;1\"}'\n"
    .. "  --cache FILE            keep the assignment in FILE (no key in it) and\n"
    .. "                          answer from it while it matches this device (ID\n"
    .. "                          scope, registration ID, endpoint, key or\n"
    .. "                          certificate): no request at all\n"
    .. "  --force                 with --cache: register even so, and keep the new\n"
    .. "                          assignment (after the device was moved or deleted\n"
    .. "                          in DPS or at the hub)\n"
    .. "  --issue-cert DIR        earn a certificate from DPS (preview): keep it in\n"
    .. "                          DIR/cert.pem with its key in DIR/key.pem; a new key\n"
    .. "                          and CSR when there is none, or it is past --renew-at\n"
    .. "                          of its validity (default 0.8), or expired\n"
    .. "  --curve P-384|P-256     the new key's curve (default P-384)\n"
    .. "  --renew-at SHARE        renew past this share of the validity (0 to 1)\n",

  renew = "usage: dps renew --id-scope S --registration-id R KEY-SOURCE --issue-cert DIR [OPTIONS]\n\n"
    .. "Registers the device with a new key and CSR whatever the certificate in DIR\n"
    .. "(DPS certificate issuance, preview), keeps the new pair there, and prints the\n"
    .. "registration state as one line of JSON; the certificate's serial and expiry\n"
    .. "on stderr.\n\n"
    .. CONNECTION:format(timeouts("(default 60)"))
    .. "  --issue-cert DIR        the folder of cert.pem and key.pem (required)\n"
    .. "  --curve P-384|P-256     the new key's curve (default P-384)\n"
    .. "  --payload JSON          the registration's payload, as for provision\n"
    .. "  --cache FILE            as for provision (written with the new assignment)\n",

  status = "usage: dps status --id-scope S --registration-id R KEY-SOURCE [OPTIONS]\n\n"
    .. "Looks up the device's registration (Device Registration Status Lookup)\n"
    .. "without registering again, and prints it as one line of JSON.\n\n"
    .. CONNECTION:format(timeouts("(default 60)")),

  token = [[
usage: dps token --id-scope S --registration-id R KEY-SOURCE [--expiry EPOCH | --ttl SECONDS]

Prints the device's DPS SAS token (resource {id_scope}/registrations/{id},
skn=registration) for an Authorization header.

  --id-scope S            the DPS instance's ID scope (required)
  --registration-id R     the device's registration ID (required)
  --symmetric-key-file FILE  individual enrollment key, base64 (or DPS_SYMMETRIC_KEY)
  --group-key-file FILE   enrollment group key, base64 (or DPS_GROUP_KEY)
  --expiry EPOCH          expiry, whole seconds since 1970-01-01 UTC
  --ttl SECONDS           lifetime from now (default 3600)
  -v, --verbose           the expiry on stderr
]],

  ["derive-key"] = [[
usage: dps derive-key --registration-id R (--group-key-file FILE | DPS_GROUP_KEY)

Prints the device key (base64) of enrollment group member R: the
HMAC-SHA256 of R under the group key. Give each device its own derived key;
keep the group key off the devices.

  --registration-id R     the device's registration ID (required)
  --group-key-file FILE   enrollment group key, base64 (or DPS_GROUP_KEY)
]],

  send = "usage: dps send --id-scope S --registration-id R KEY-SOURCE [OPTIONS] (DATA | -)\n\n"
    .. "Provisions (from --cache when it matches), then sends DATA (- reads stdin)\n"
    .. "to the assigned IoT Hub as one device-to-cloud message over HTTPS. When\n"
    .. "the hub refuses the device (deleted, disabled, moved: 401, 403, 404), it\n"
    .. "provisions again once, updates the cache, and sends again. A message the\n"
    .. "hub would refuse (over 256 KiB, a bad property) exits 2 before any request.\n\n"
    .. CONNECTION:format(timeouts("(default 60 to provision, 30 per hub call)"))
    .. "  --cache FILE            the assignment cache (see dps provision --help)\n"
    .. "  --payload JSON          the registration's payload when it provisions\n"
    .. "  --hub-endpoint URL      connect here instead of the assigned hub (an\n"
    .. "                          emulator, a proxy); tokens still name the hub\n"
    .. "  --property NAME=VALUE   an application property (repeatable)\n"
    .. "  --content-type T        the message's content type, e.g. application/json\n"
    .. "  --content-encoding E    its encoding, e.g. utf-8\n"
    .. "  --message-id ID         its message ID\n"
    .. "  --issue-cert DIR        as for provision: earn a certificate, and talk to\n"
    .. "                          the hub by mutual TLS with it (also --curve, --renew-at)\n",

  receive = "usage: dps receive --id-scope S --registration-id R KEY-SOURCE [OPTIONS]\n"
    .. "                   [--complete | --reject | --abandon]\n\n"
    .. "Provisions (from --cache when it matches), then takes one cloud-to-device\n"
    .. "message from the hub and prints it as one line of JSON (body, properties,\n"
    .. "message_id, lock_token, delivery_count, …); prints nothing and exits 0\n"
    .. "when none waits. Without a flag the message stays locked until dps\n"
    .. "complete, reject or abandon settles it by its lock_token, or comes again\n"
    .. "when the lock expires; a flag settles it only once its line is ready (one\n"
    .. "that cannot be printed exits 1, unsettled). The service asks HTTPS devices\n"
    .. "to check less often than every 25 minutes.\n\n"
    .. CONNECTION:format(timeouts("(default 60 to provision, 30 per hub call)"))
    .. "  --cache FILE            the assignment cache (see dps provision --help)\n"
    .. "  --payload JSON          the registration's payload when it provisions\n"
    .. "  --hub-endpoint URL      connect here instead of the assigned hub\n"
    .. "  --complete              done with it: the hub deletes it\n"
    .. "  --reject                refuse it: dead-lettered, never delivered again\n"
    .. "  --abandon               put it back: delivered again\n"
    .. "  --issue-cert DIR        as for send (also --curve, --renew-at)\n",

  complete = settle_help("complete", "Completes the message: done with it, the hub deletes it."),
  reject = settle_help("reject", "Rejects the message: the hub dead-letters it, never to deliver it again."),
  abandon = settle_help("abandon", "Abandons the message: the hub puts it back and delivers it again."),

  upload = "usage: dps upload --id-scope S --registration-id R KEY-SOURCE [OPTIONS] FILE\n\n"
    .. "Provisions (from --cache when it matches), then uploads FILE to the storage\n"
    .. "of the assigned IoT Hub (file upload over HTTPS): the hub names the place,\n"
    .. "the file goes there in one request, or block by block when it is larger\n"
    .. "than --block-size (read a block at a time; a block that fails with a\n"
    .. "retryable answer is sent again), and the hub is told how it went. Progress\n"
    .. "on stderr (a line per block, or a bar on a terminal); one line of JSON on\n"
    .. "stdout: blob_name (the device ID in front), size, correlation_id, blocks.\n"
    .. "Exit codes as for send; a FILE that cannot be read exits 3.\n\n"
    .. CONNECTION:format(timeouts("(default 60 to provision, 30 per hub call and\n"
      .. "                          per storage request, retries included)"))
    .. "  --cache FILE            the assignment cache (see dps provision --help)\n"
    .. "  --payload JSON          the registration's payload when it provisions\n"
    .. "  --hub-endpoint URL      connect here instead of the assigned hub\n"
    .. "  --name NAME             the blob's name under the device's folder, e.g.\n"
    .. "                          logs/boot.txt (default: FILE's base name)\n"
    .. "  --block-size BYTES      larger files go in blocks of this size (default\n"
    .. "                          4194304, at most 104857600)\n"
    .. "  --content-type T        the blob's content type (default\n"
    .. "                          application/octet-stream)\n"
    .. "  --issue-cert DIR        as for send (also --curve, --renew-at)\n",
}

--- The `--version` line.
function help.version(version)
  return string.format("dps (lua-azure-dps) %s, %s\n", version,
    rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION)
end

return help
