/*
 * dps_engine.h - what the two files of the transfer engine share (private):
 *
 *   dps_engine.c      the multi handle, its callbacks, driving, lifecycle,
 *                     core.engine
 *   dps_engine_api.c  the Engine methods
 */
#ifndef DPS_ENGINE_H
#define DPS_ENGINE_H

#include <poll.h>

#include <curl/curl.h>

#include "dps_http.h"

#define DPS_ENGINE_MT "dps.core.Engine"
enum { DPS_SLOT_FREE, DPS_SLOT_BUSY, DPS_SLOT_DONE };

typedef struct {
    dps_transfer t; /* the transfer: handle, buffers, flags */
    int state;     /* DPS_SLOT_FREE, _BUSY (in the multi) or _DONE (result unread) */
    CURLcode result;
} dps_slot;

typedef struct {
    CURLM *multi;         /* NULL once closed */
    CURLSH *share;
    dps_slot *slots;
    int nslots, busy;
    struct pollfd *watch; /* sockets libcurl wants watched */
    struct pollfd *ready; /* scratch copy for poll() */
    int nwatch, capwatch;
    int *done;            /* ids finished and not yet reported by step/run */
    int ndone;
    double timer_at;      /* monotonic seconds libcurl wants a timeout action; < 0: none */
} dps_engine;

/* One pass without blocking: ready sockets, then a due timeout; finished
 * transfers become DONE and are queued in e->done. */
void dps_engine_drive(dps_engine *e);

/* Blocks on the watched sockets for at most seconds (> 0). */
void dps_engine_await(dps_engine *e, double seconds);

/* Frees everything; safe on a half-built or closed engine. */
void dps_engine_release(dps_engine *e);

/* core.engine(options, slots). */
int dps_engine_new(lua_State *L);

#endif
