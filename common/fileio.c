/* fileio -- error messages, regular-file opening and whole-file reads. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

int ss_fileio_read_all(const char *path, size_t max, char **buf, size_t *len,
                       char *err, size_t errsz)
{
    int fd = -1;
    uint64_t size = 0;
    char *b = NULL;
    size_t got = 0;
    *buf = NULL;
    *len = 0;
    int rc = ss_fileio_open_regular(path, &fd, &size, err, errsz);
    if (rc != 0)
        goto out;
    if (size > max) {
        ss_fileio_err(err, errsz, "%s: %llu bytes, more than the %zu allowed", path,
                      (unsigned long long)size, max);
        rc = SS_ERR_TOO_BIG;
        goto out;
    }
    rc = SS_ERR_NOMEM;
    if (!(b = malloc((size_t)size + 1))) {
        ss_fileio_err(err, errsz, "%s: out of memory", path);
        goto out;
    }
    while (got < (size_t)size) {
        ssize_t n = read(fd, b + got, (size_t)size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ss_fileio_err(err, errsz, "%s: cannot read: %s", path,
                          n < 0 ? strerror(errno) : "file shrank while reading");
            rc = SS_ERR_IO;
            goto out;
        }
        got += (size_t)n;
    }
    b[got] = '\0';
    *buf = b;
    *len = got;
    b = NULL;
    rc = 0;
out:
    free(b);
    if (fd >= 0)
        close(fd);
    return rc;
}
