/* ss_parse -- strict parsing of numeric command-line values, shared by
 * every program (server flags, CLI options, worker flags).
 *
 * Strict means: decimal digits only, no leading white space, no sign, no
 * trailing characters, no empty string, and the value within [min, max]
 * (overflow is out of range). So " -1", "+3", "1e3" and "12k" are refused.
 */
#ifndef SS_PARSE_H
#define SS_PARSE_H

#include <stdint.h>

/* Parse s into *out. Returns 0, SS_ERR_INVALID for anything that is not a
 * plain decimal number (or NULL), SS_ERR_TOO_BIG for a value outside
 * [min, max]. *out is written only on success. */
int ss_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Parse a finite decimal floating-point number ("0.5", "-1", "1e-3") with
 * nothing before or after it. Returns 0 or SS_ERR_INVALID. */
int ss_parse_double(const char *s, double *out);

#endif
