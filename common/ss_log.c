/* ss_log -- one level-checked logging macro for every program. */
#include "ss_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int ss_log_threshold = SS_LOG_INFO;
static const char *component = "statesaver";

int ss_log_parse_level(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void ss_log_set_component(const char *name)
{
    component = name;
}

void ss_log_write(int level, const char *fmt, ...)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int off = snprintf(line, sizeof line,
                       "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                       tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                       tags[level < 0 ? 0 : level > 3 ? 3 : level], component);
    va_list ap;
    va_start(ap, fmt);
    if (off > 0 && (size_t)off < sizeof line)
        vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap);
    va_end(ap);
    /* One fputs per line so concurrent threads do not interleave. */
    fprintf(stderr, "%s\n", line);
}
