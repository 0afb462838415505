/***
 * The C core of lua-azure-dps: signing, encodings, clocks, files and the
 * HTTPS transfers.  Users call the `dps` module; `dps.core` is its engine.
 * @module dps.core
 */
#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_crypto.h"

/***
 * Versions of the module and of the libraries it runs with.
 * @function version
 * @treturn table `{ dps = "0.1.0", curl = "8.x", ssl = "OpenSSL/3.0.x" (libcurl's TLS library),
 *   crypto = "OpenSSL 3.0.x …" or "mbed TLS 2.28.x" (the one dps.core signs with),
 *   backend = "openssl" or "mbedtls", async_dns = true }`; `async_dns` is false when libcurl resolves names
 *   with the blocking system resolver, whose lookups no timeout can cut
 *   short (README: "Deadlines and DNS")
 */
static int core_version(lua_State *L)
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);

    lua_createtable(L, 0, 6);
    dps_set_string(L, "dps", DPS_CORE_VERSION);
    dps_set_string(L, "curl", info->version);
    dps_set_string(L, "ssl", info->ssl_version != NULL ? info->ssl_version : "none");
    dps_set_string(L, "crypto", dps_crypto_version());
    dps_set_string(L, "backend", dps_crypto_backend());
    lua_pushboolean(L, (info->features & CURL_VERSION_ASYNCHDNS) != 0);
    lua_setfield(L, -2, "async_dns");
    return 1;
}

DPS_EXPORT int luaopen_dps_core(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"version", core_version},
        {NULL, NULL},
    };

    /* libcurl keeps a reference count: every call is balanced by nothing,
     * and repeated calls after the first are cheap no-ops. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return luaL_error(L, "dps.core: libcurl could not be initialised");

    lua_newtable(L);
    luaL_setfuncs(L, functions, 0);
    dps_open_codec(L);
    dps_open_sas(L);
    dps_open_time(L);
    dps_open_engine(L);
    dps_open_x509(L);
    dps_open_fs(L);
    dps_open_csr(L);
    lua_pushliteral(L, "dps.core");
    lua_setfield(L, -2, "_NAME");
    lua_pushliteral(L, DPS_CORE_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
