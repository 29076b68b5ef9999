/* fuzz_file -- hand a fuzz input to a reader that takes a path. */
#include "fuzz_file.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[PATH_MAX];  /* the private directory, "" until made */
static char g_path[PATH_MAX]; /* the last file written */
static volatile unsigned char g_sink; /* keeps fuzz_touch's reads */

static void remove_dir(void)
{
    if (g_path[0])
        unlink(g_path);
    if (g_dir[0])
        rmdir(g_dir);
}

const char *fuzz_file_put(const uint8_t *data, size_t size, const char *suffix)
{
    if (!g_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/ss-fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(g_dir))
            abort();
        atexit(remove_dir);
    }
    if (g_path[0])
        unlink(g_path);
    snprintf(g_path, sizeof g_path, "%s/input%s", g_dir, suffix);
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    if (close(fd) != 0)
        abort();
    return g_path;
}

void fuzz_touch(const void *p, size_t n)
{
    const unsigned char *q = p;
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++)
        acc ^= q[i];
    g_sink = acc;
}
