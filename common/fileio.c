/* fileio -- error messages and regular-file opening for the worker's file formats. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ss_error.h"

void ss_fileio_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err == NULL || errsz == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

int ss_fileio_open_regular(const char *path, int *fd, uint64_t *size, char *err,
                           size_t errsz)
{
    struct stat st;
    int rc = SS_ERR_IO;
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0 || fstat(f, &st) != 0) {
        ss_fileio_err(err, errsz, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        ss_fileio_err(err, errsz, "%s: not a regular file", path);
        goto out;
    }
    *size = (uint64_t)st.st_size;
    rc = 0;
out:
    if (rc < 0 && f >= 0) {
        close(f);
        f = -1;
    }
    *fd = f;
    return rc;
}
