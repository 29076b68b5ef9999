/* fileio -- small helpers shared by the worker's file readers and writers:
 * error messages into a caller's buffer, and opening a regular file to read, reading a small file whole.
 */
#ifndef SS_FILEIO_H
#define SS_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* printf into err (at most errsz bytes, always NUL-terminated); does
 * nothing when err is NULL or errsz is 0. */
void ss_fileio_err(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Open path read-only (close-on-exec) and require a regular file. On success
 * *fd is the open descriptor (the caller closes it) and *size its length in
 * bytes. On error returns SS_ERR_IO with *fd = -1 (nothing left open) and
 * writes "<path>: cannot open: <reason>" or "<path>: not a regular file"
 * into err. */
int ss_fileio_open_regular(const char *path, int *fd, uint64_t *size, char *err,
                           size_t errsz);

/* Read a whole regular file of at most max bytes into a malloc'ed buffer
 * with a NUL after the data (the caller frees *buf). SS_ERR_IO (message
 * "<path>: ..."), SS_ERR_TOO_BIG ("<path>: N bytes, more than the M
 * allowed") or SS_ERR_NOMEM; on error *buf is NULL. */
int ss_fileio_read_all(const char *path, size_t max, char **buf, size_t *len,
                       char *err, size_t errsz);

#endif
