/* ss_token -- read a shared-secret token file (--token-file,
 * --auth-token-file), the one rule for every program.
 *
 * The token is the file's bytes without one trailing line ending ("\n" or
 * "\r\n"), so `echo secret > f` and `printf secret > f` give the same
 * token. A file that is empty (or only a line ending) or larger than
 * SS_TOKEN_FILE_MAX bytes is refused. Nothing else is trimmed.
 */
#ifndef SS_TOKEN_H
#define SS_TOKEN_H

#include <stddef.h>

/* Largest token file accepted (bytes, line ending included). */
#define SS_TOKEN_FILE_MAX 4096u

/* Read path. On success *token is a NUL-terminated copy (owned: free with
 * ss_token_free; the NUL is not counted in *len, and a token may itself
 * hold NUL bytes). Errors, with a message naming path in err:
 * SS_ERR_IO (cannot open or read), SS_ERR_TOO_BIG (over the limit),
 * SS_ERR_INVALID (empty), SS_ERR_NOMEM. */
int ss_token_read(const char *path, char **token, size_t *len, char *err, size_t errsz);

/* Overwrite len bytes of token with zeros and free it. Accepts NULL. */
void ss_token_free(char *token, size_t len);

#endif
