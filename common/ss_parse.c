/* ss_parse -- strict parsing of numeric command-line values. */
#include "ss_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "ss_error.h"

int ss_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s)
        return SS_ERR_INVALID;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return SS_ERR_INVALID;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return SS_ERR_TOO_BIG;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return SS_ERR_TOO_BIG;
    *out = v;
    return 0;
}

int ss_parse_double(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return SS_ERR_INVALID;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
        return SS_ERR_INVALID;
    *out = v;
    return 0;
}
