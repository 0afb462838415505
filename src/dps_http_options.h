/*
 * dps_http_options.h - the options of core.engine (dps_http_options.c), for
 * the engine (dps_engine.c): read and checked once, then applied to each
 * slot.  They build on a slot (dps_http.h), never the other way round.
 */
#ifndef DPS_HTTP_OPTIONS_H
#define DPS_HTTP_OPTIONS_H

#include <curl/curl.h>

#include "dps_http.h"

/* Reads and checks the option table at index 1 (the options of
 * core.engine; raises on misuse) and pushes what it read as an opaque
 * userdata, returned.  Valid while that table stays at index 1. */
const void *dps_http_options_read(lua_State *L);

/* Applies options read by dps_http_options_read to an initialised slot.
 * On failure *what is the option libcurl refused (for dps_http_refused). */
CURLcode dps_http_options_apply(dps_transfer *t, const void *opts, CURLoption *what);

/* Raises "dps.core.engine: cannot set option 'NAME' (libcurl's reason,
 * rc)" for option what (DPS_NO_OPTION: the handle could not be made); NAME
 * is the engine's option that sets it, else libcurl's name for it. */
int dps_http_refused(lua_State *L, CURLoption what, CURLcode rc);

#endif
