/*
 * A stand-in clock for the specs: preloaded (LD_PRELOAD) into a process
 * where faketime cannot move the clock (faketime is a glibc preload: this
 * one is built for the process's own C library, e.g. musl on the
 * OpenWrt-like stack), it adds STANDIN_CLOCK_OFFSET seconds (negative: the
 * past) to the wall clock the process sees: time(), gettimeofday() and
 * clock_gettime() of CLOCK_REALTIME; the monotonic clocks are left alone.
 * For 64-bit targets (the host's CPU).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long standin_offset(void)
{
    const char *s = getenv("STANDIN_CLOCK_OFFSET");
    return s ? strtol(s, NULL, 10) : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int r = (int)syscall(SYS_clock_gettime, id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += standin_offset();
    return r;
}

time_t time(time_t *t)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}
