/* ss_log -- one level-checked logging macro for every program.
 *
 * Lines go to stderr as "2026-11-24T08:00:00.123Z LEVEL component: text".
 * The level check happens before the arguments are evaluated.
 */
#ifndef SS_LOG_H
#define SS_LOG_H

enum ss_log_level {
    SS_LOG_ERROR = 0,
    SS_LOG_WARN = 1,
    SS_LOG_INFO = 2,
    SS_LOG_DEBUG = 3,
};

/* Current threshold; messages above it are dropped. Default SS_LOG_INFO. */
extern int ss_log_threshold;

/* Parse "error|warn|info|debug"; returns the level or -1. */
int ss_log_parse_level(const char *name);

/* Set the component name printed on every line (static string). */
void ss_log_set_component(const char *name);

void ss_log_write(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define SS_LOG(level, ...)                                                     \
    do {                                                                       \
        if ((level) <= ss_log_threshold)                                       \
            ss_log_write((level), __VA_ARGS__);                                \
    } while (0)

#endif
