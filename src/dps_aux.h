/*
 * dps_aux.h - helpers every part of dps.core uses: registration, failures,
 * result tables, misuse errors that name the public function, clocks,
 * secret wiping, and the rule of the client-certificate options.
 *
 * dps_core.c opens the module; the files of each concern include this
 * header, never dps_core.h's opener, so there is no circle.
 */
#ifndef DPS_AUX_H
#define DPS_AUX_H

#include <stddef.h>
#include <time.h>

#include "dps_compat.h"

/*
 * Operational failure: pushes fail (nil), message, and an info table
 * { kind = kind }, and returns 3.  Never used for misuse, which raises.
 */
int dps_push_failure(lua_State *L, const char *kind, const char *message);

/* t[k] = v, t the table on top of the stack. */
void dps_set_string(lua_State *L, const char *k, const char *v);
void dps_set_integer(lua_State *L, const char *k, lua_Integer v);

/* Seconds on clock id (CLOCK_REALTIME, CLOCK_MONOTONIC), with fractions;
 * 0 if the clock cannot be read. */
double dps_clock(clockid_t id);

/* Overwrite secret bytes in a way the compiler cannot drop. */
void dps_wipe(void *p, size_t n);

/* Whether n bytes at a and b are equal, in time that does not depend on
 * where they differ (for comparing secrets). */
int dps_memeq(const void *a, const void *b, size_t n);

/*
 * Misuse.  Raises "POSITION: WHO: MESSAGE" (fmt as lua_pushfstring).  who is
 * the public Lua function that called this C function directly on its
 * caller's behalf (e.g. "dps.sas_token"): the position is then that
 * function's caller's.  With who NULL the message is bare and the position is
 * the C function's caller's, as luaL_error gives.  Never returns.
 */
int dps_misuse(lua_State *L, const char *who, const char *fmt, ...);

/* luaL_argerror with a message formatted as lua_pushfstring does. */
#define dps_argerror(L, arg, ...) luaL_argerror(L, arg, lua_pushfstring(L, __VA_ARGS__))

/*
 * The string argument arg, named name in messages ("NAME must be a string,
 * got TYPE"), raised through dps_misuse with who.
 */
const char *dps_check_string(lua_State *L, int arg, const char *who, const char *name, size_t *len);

/*
 * The one rule of client-certificate options, for the engine and the X.509
 * check alike: 'cert' and 'cert_file' exclude each other, as do 'key' and
 * 'key_file'; a key or a password needs a certificate; with need_pair a
 * certificate and a key must both be there.  dps_credentials_problem says
 * what breaks the rule (NULL: nothing); dps_check_credentials raises it as
 * bad argument arg.
 */
typedef struct {
    const char *cert_file, *cert, *key_file, *key, *key_password;
} dps_credentials;

const char *dps_credentials_problem(const dps_credentials *c, int need_pair);
void dps_check_credentials(lua_State *L, int arg, const dps_credentials *c, int need_pair);

#endif
