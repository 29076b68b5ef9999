/* ss_token -- read a shared-secret token file (see ss_token.h). */
#include "ss_token.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "ss_error.h"

int ss_token_read(const char *path, char **token, size_t *len, char *err, size_t errsz)
{
    int rc = SS_ERR_NOMEM;
    size_t n = 0;
    char *buf = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        ss_fileio_err(err, errsz, "%s: cannot open the token file: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    /* One byte more than the limit tells an oversized file apart. */
    buf = malloc(SS_TOKEN_FILE_MAX + 2);
    if (!buf) {
        ss_fileio_err(err, errsz, "%s: out of memory", path);
        goto out;
    }
    n = fread(buf, 1, SS_TOKEN_FILE_MAX + 1, fp);
    if (ferror(fp)) {
        ss_fileio_err(err, errsz, "%s: cannot read the token file: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    if (n > SS_TOKEN_FILE_MAX) {
        ss_fileio_err(err, errsz, "%s: token file larger than %u bytes", path,
                      SS_TOKEN_FILE_MAX);
        rc = SS_ERR_TOO_BIG;
        goto out;
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n == 0) {
        ss_fileio_err(err, errsz, "%s: token file is empty", path);
        rc = SS_ERR_INVALID;
        goto out;
    }
    buf[n] = '\0';
    *token = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    ss_token_free(buf, SS_TOKEN_FILE_MAX + 2);
    if (fp)
        fclose(fp);
    return rc;
}

void ss_token_free(char *token, size_t len)
{
    if (!token)
        return;
    /* volatile: the clearing of a buffer about to be freed is kept. */
    volatile char *p = token;
    for (size_t i = 0; i < len; i++)
        p[i] = 0;
    free(token);
}
