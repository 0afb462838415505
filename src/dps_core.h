/*
 * dps_core.h - what the parts of dps.core share.
 *
 * Each C file owns one concern and adds its functions to the module table
 * through one dps_open_* function, called by luaopen_dps_core with the module
 * table on top of the stack.  Only luaopen_dps_core leaves the shared object.
 * What the parts share at run time (failures, misuse errors, wiping) is in
 * dps_aux.h, so dps_core.c only opens the module.
 */
#ifndef DPS_CORE_H
#define DPS_CORE_H

#include "dps_compat.h"

#define DPS_CORE_VERSION "0.1.0"

#if defined(__GNUC__)
#define DPS_EXPORT __attribute__((visibility("default")))
#else
#define DPS_EXPORT
#endif

/* Each adds its functions to the table on top of the stack. */
void dps_open_codec(lua_State *L); /* dps_codec.c: base64, percent-encoding */
void dps_open_sas(lua_State *L);   /* dps_sas.c: HMAC, derived keys, SAS tokens */
void dps_open_time(lua_State *L);  /* dps_time.c: clocks, sleep, jitter */
void dps_open_engine(lua_State *L); /* dps_engine*.c: HTTPS transfers, one or many at once */
void dps_open_x509(lua_State *L);  /* dps_x509.c: client-certificate checks */
void dps_open_fs(lua_State *L);
void dps_open_csr(lua_State *L);   /* dps_csr.c: EC keys, certificate requests, certificate facts */

#endif
