/* ss_testserver -- start and stop the real statesaver-server for client tests.
 *
 * The server binary is $SS_BUILD_ROOT/server/statesaver-server. It listens
 * on 127.0.0.1 (or ::1) port 0 with --sync off and a fresh LMDB directory under a
 * temporary directory; the bound port comes back through --port-file.
 */
#ifndef SS_TESTSERVER_H
#define SS_TESTSERVER_H

#include <sys/types.h>

typedef struct ss_testserver {
    pid_t pid;          /* server process, 0 when not running */
    int port;           /* bound port */
    char addr[64];      /* "127.0.0.1:PORT" or "[::1]:PORT" */
    char dir[256];      /* temporary directory (data, port file, token) */
} ss_testserver;

/* Start a server; token (NUL-terminated) or NULL for no authentication.
 * Returns 0, or -1 with a message on stderr. Waits up to 20 s for the port. */
int ss_testserver_start(ss_testserver *s, const char *token);

/* The same on an IPv6 loopback: listens on [::1]:0, addr is "[::1]:PORT". */
int ss_testserver_start_v6(ss_testserver *s, const char *token);

/* A shard of a static cluster: listens on `listen` ("127.0.0.1:PORT", the
 * address the topology file names), --cluster-config config --shard shard. */
int ss_testserver_start_shard(ss_testserver *s, const char *listen, const char *config,
                              const char *shard);

/* SIGTERM, wait (SIGKILL after 10 s), remove the directory. */
void ss_testserver_stop(ss_testserver *s);

#endif
