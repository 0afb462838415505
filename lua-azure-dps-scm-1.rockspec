rockspec_format = "3.0"
package = "lua-azure-dps"
version = "scm-1"
-- The development version, from the repository's main branch; releases have
-- their own rockspec (lua-azure-dps-VERSION-1.rockspec, `make rock`).
source = {
  url = "git+https://github.com/lua-azure-dps/lua-azure-dps.git",
  branch = "main",
}
description = {
  summary = "Azure IoT Hub Device Provisioning Service (DPS) client over HTTPS",
  detailed = [[
Provisions devices through Azure DPS over plain HTTPS: SAS tokens and derived
keys (OpenSSL), register / poll / status lookup over one kept-alive TLS
connection (libcurl), Retry-After and deadlines done right, and a `dps`
command-line tool. Small enough for OpenWrt routers.
]],
  homepage = "https://github.com/lua-azure-dps/lua-azure-dps",
  issues_url = "https://github.com/lua-azure-dps/lua-azure-dps/issues",
  license = "MIT",
  labels = { "azure", "iot", "dps", "openwrt" },
}
supported_platforms = { "unix" }
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson",
}
-- CURL is declared by library only: Debian keeps curl/curl.h in the multiarch
-- include folder, where luarocks does not look, while the compiler does.
external_dependencies = {
  CURL = { library = "curl" },
  -- luarocks builds the OpenSSL crypto backend (src/dps_crypto_openssl.c).
  -- A packager who wants mbedTLS instead (OpenWrt, whose libcurl is on
  -- it) builds with the Makefile: make core install CRYPTO=mbedtls
  -- (src/dps_crypto_mbedtls.c, -lmbedx509 -lmbedcrypto); README "Building".
  OPENSSL = { header = "openssl/hmac.h", library = "crypto" },
}
build = {
  type = "builtin",
  modules = {
    ["dps.core"] = {
      sources = {
        "src/dps_core.c", "src/dps_codec.c", "src/dps_sas.c", "src/dps_time.c",
        "src/dps_http.c", "src/dps_engine.c", "src/dps_engine_api.c", "src/dps_x509.c", "src/dps_headers.c",
        "src/dps_fs.c", "src/dps_aux.c", "src/dps_crypto_openssl.c", "src/dps_csr.c",
        "src/dps_http_failure.c", "src/dps_http_headers.c", "src/dps_http_options.c", "src/dps_http_body.c",
      },
      incdirs = { "src", "$(OPENSSL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)" },
      libraries = { "curl", "ssl", "crypto" },
      defines = { "_POSIX_C_SOURCE=200809L", "OPENSSL_API_COMPAT=0x10101000L" },
    },
    ["dps"] = "lua/dps.lua",
    ["dps.check"] = "lua/dps/check.lua",
    ["dps.client"] = "lua/dps/client.lua",
    ["dps.batch"] = "lua/dps/batch.lua",
    ["dps.pace"] = "lua/dps/pace.lua",
    ["dps.errors"] = "lua/dps/errors.lua",
    ["dps.poll"] = "lua/dps/poll.lua",
    ["dps.hub"] = "lua/dps/hub.lua",
    ["dps.hubs"] = "lua/dps/hubs.lua",
    ["dps.hub_response"] = "lua/dps/hub_response.lua",
    ["dps.hub_message"] = "lua/dps/hub_message.lua",
    ["dps.upload"] = "lua/dps/upload.lua",
    ["dps.request"] = "lua/dps/request.lua",
    ["dps.retry"] = "lua/dps/retry.lua",
    ["dps.runtime"] = "lua/dps/runtime.lua",
    ["dps.connect"] = "lua/dps/connect.lua",
    ["dps.response"] = "lua/dps/response.lua",
    ["dps.http_time"] = "lua/dps/http_time.lua",
    ["dps.session"] = "lua/dps/session.lua",
    ["dps.headers"] = "lua/dps/headers.lua",
    ["dps.cache"] = "lua/dps/cache.lua",
    ["dps.heap"] = "lua/dps/heap.lua",
    ["dps.certificate"] = "lua/dps/certificate.lua",
    ["dps.clock"] = "lua/dps/clock.lua",
    ["dps.cli"] = "lua/dps/cli.lua",
    ["dps.cli.args"] = "lua/dps/cli/args.lua",
    ["dps.cli.commands"] = "lua/dps/cli/commands.lua",
    ["dps.cli.help"] = "lua/dps/cli/help.lua",
    ["dps.cli.output"] = "lua/dps/cli/output.lua",
    ["dps.cli.batch"] = "lua/dps/cli/batch.lua",
    ["dps.cli.secrets"] = "lua/dps/cli/secrets.lua",
    ["dps.cli.hub"] = "lua/dps/cli/hub.lua",
  },
  install = { bin = { ["dps"] = "bin/dps" } },
  copy_directories = { "examples" },
}
test_dependencies = { "busted" }
test = { type = "busted" }
