/* atomic_file -- temporary file + fsync + rename + fsync of the directory,
 * so targets are written whole or not at all, and durably. */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "ss_error.h"

struct ss_afile {
    FILE *fp;    /* stream on the temporary file */
    char *tmp;   /* temporary path (same directory as target) */
    char *path;  /* target path */
};

int ss_afile_open(const char *path, ss_afile **out, char *err, size_t errsz)
{
    int rc = SS_ERR_NOMEM;
    int fd = -1;
    ss_afile *af = calloc(1, sizeof *af);
    if (af == NULL)
        goto out;
    af->path = strdup(path);
    /* Same directory as the target, so the final rename cannot cross
     * file systems. */
    if (af->path == NULL || asprintf(&af->tmp, "%s.tmp-XXXXXX", path) < 0) {
        af->tmp = NULL;
        goto out;
    }
    fd = mkstemp(af->tmp);
    if (fd < 0) {
        int e = errno;
        ss_fileio_err(err, errsz, "%s: cannot create a file beside it: %s", path, strerror(e));
        free(af->tmp);
        af->tmp = NULL;
        errno = e;
        rc = SS_ERR_IO;
        goto out;
    }
    af->fp = fdopen(fd, "wb");
    if (af->fp == NULL) {
        int e = errno;
        ss_fileio_err(err, errsz, "%s: %s", path, strerror(e));
        close(fd);
        rc = SS_ERR_IO;
        goto out;
    }
    *out = af;
    af = NULL;
    rc = 0;
out:
    if (rc == SS_ERR_NOMEM)
        ss_fileio_err(err, errsz, "%s: out of memory", path);
    ss_afile_abort(af);
    return rc;
}

FILE *ss_afile_stream(ss_afile *af)
{
    return af->fp;
}

/* fsync the directory holding path. 0 or -1 with errno set. */
static int sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (dir == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int ss_afile_commit(ss_afile *af, char *err, size_t errsz)
{
    int rc = SS_ERR_IO;
    FILE *fp = af->fp;
    af->fp = NULL;
    if (ferror(fp)) {
        ss_fileio_err(err, errsz, "%s: write failed", af->path);
        fclose(fp);
        goto out;
    }
    /* The data is on disk before the name points at it; a failed fsync
     * is not retried (the page cache may have dropped the pages). */
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        ss_fileio_err(err, errsz, "%s: write failed: %s", af->path, strerror(errno));
        fclose(fp);
        goto out;
    }
    if (fclose(fp) != 0) {
        ss_fileio_err(err, errsz, "%s: write failed: %s", af->path, strerror(errno));
        goto out;
    }
    /* mkstemp creates 0600; give the result the usual umask-based mode. */
    mode_t um = umask(0);
    umask(um);
    if (chmod(af->tmp, 0666 & ~um) != 0 || rename(af->tmp, af->path) != 0) {
        ss_fileio_err(err, errsz, "%s: cannot move the finished file into place: %s",
                      af->path, strerror(errno));
        goto out;
    }
    free(af->tmp);
    af->tmp = NULL;
    /* The rename is durable once the directory is synced. */
    if (sync_dir(af->path) != 0) {
        ss_fileio_err(err, errsz, "%s: cannot sync its directory: %s", af->path,
                      strerror(errno));
        goto out;
    }
    rc = 0;
out:
    ss_afile_abort(af);
    return rc;
}

void ss_afile_abort(ss_afile *af)
{
    if (af == NULL)
        return;
    if (af->fp != NULL)
        fclose(af->fp);
    if (af->tmp != NULL)
        unlink(af->tmp);
    free(af->tmp);
    free(af->path);
    free(af);
}
