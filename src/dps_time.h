/*
 * dps_time.h - header-value parsing for time, as plain C for the fuzzers.
 */
#ifndef DPS_TIME_H
#define DPS_TIME_H

#include <stddef.h>

/* Longest header value looked at; longer ones are invalid. */
#define DPS_TIME_MAX_HEADER 128

/*
 * Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.  On success
 * returns 0 and stores the delay in seconds (never negative: a date in the
 * past gives 0; huge values are capped at 1e9) in *seconds.  Returns -1 for
 * anything else ("-5", "garbage", empty, too long, NUL bytes).
 */
int dps_parse_retry_after(const char *value, size_t len, double now, double *seconds);

/* An HTTP-date (IMF-fixdate and the obsolete forms) as seconds since the
 * epoch; returns 0 on success, -1 when it is not a date. */
int dps_parse_http_date(const char *value, size_t len, double *epoch);

#endif
