/* cli -- shared pieces of the `statesaver` command-line program.
 *
 * Exit statuses: 0 success, 1 runtime failure (network, server, files),
 * 2 usage error. Messages go to stderr prefixed with "statesaver: ".
 */
#ifndef SS_CLI_H
#define SS_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ss_npy.h"
#include "statesaver.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2
/* Default server when neither --server nor STATESAVER_SERVER is given. */
#define CLI_DEFAULT_SERVER "127.0.0.1:7450"

/* Global options, shared by every command. */
typedef struct cli_ctx {
    const char *server;  /* HOST:PORT to talk to */
    const char *cluster; /* --cluster ADDR,ADDR,... or NULL (then: server) */
    int timeout_ms;      /* per-call timeout */
    char *token;         /* auth token (owned) or NULL */
    size_t token_len;    /* bytes of token */
    uint32_t max_redirects;  /* --max-redirects (0 = library default) */
    uint32_t unavailable_ms; /* --unavailable-retry-ms (0 = library default) */
} cli_ctx;

/* Print "statesaver: <msg>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print a usage error for cmd and return CLI_EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Report a failed library call ("what: <code text>: <server message>"),
 * return CLI_EXIT_FAIL. */
int cli_fail(ss_client *c, const char *what, int rc);

/* Connect (and say Hello with the token); prints the error itself. */
int cli_connect(const cli_ctx *ctx, ss_client **out);
/* Connect to the cluster of --cluster (or of --server, learned with a
 * Topology request: a single server is a cluster of one); prints the
 * error itself. */
int cli_cluster(const cli_ctx *ctx, ss_cluster **out);
/* cli_fail for a cluster call. */
int cli_cfail(ss_cluster *c, const char *what, int rc);
/* Options every cluster-aware program shares, for cli_cluster_options. */
void cli_cluster_options(const cli_ctx *ctx, ss_cluster_options *o);

/* The n command-line words at argv as keys (their bytes, without the NUL;
 * borrowed from argv): *out is a new array the caller frees. Prints the
 * error itself. Used by every command taking KEY... (drop, cancel). */
int cli_keys_argv(char **argv, size_t n, ss_key **out);

/* Standard --help option of a command, and its handling: print text to
 * stdout, exit status 0. */
#define CLI_HELP_OPT {"help", no_argument, NULL, 'h'}
int cli_help(const char *text);
/* Print a key in its printable form (common/ss_keyfmt: \xNN escapes). */
void cli_print_key(FILE *fp, const void *data, size_t len);

/* Largest .npy data the CLI reads (bytes); matches the default frame limit. */
#define CLI_NPY_MAX_BYTES (64u * 1024u * 1024u)

/* The wire dtype (SS_DTYPE_*) of an array read by ss_npy (0 if none). */
int cli_npy_dtype(const ss_npy *a);
/* Read path with common/ss_npy, at most CLI_NPY_MAX_BYTES of data. */
int cli_npy_read(const char *path, ss_npy **out, char *err, size_t errsz);
/* Write nbytes of data of wire dtype with shape [rank] (atomically, with
 * fsync, through ss_npy); a size that does not match the shape, or a
 * dtype .npy cannot hold, is SS_ERR_INVALID with nothing written. */
int cli_npy_write(const char *path, int dtype, const int64_t *shape, size_t rank,
                  const void *data, size_t nbytes, char *err, size_t errsz);

/* Commands: argv[0] is the command name; return the exit status. */
int cli_cmd_ping(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_declare(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_fetch(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_save(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_ls(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_drop(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_stats(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_cancel(const cli_ctx *ctx, int argc, char **argv); /* cli_cancel.c */
int cli_cmd_bench(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_submit(const cli_ctx *ctx, int argc, char **argv); /* cli_submit.c */
int cli_cmd_cluster(const cli_ctx *ctx, int argc, char **argv); /* cli_cluster.c */

#endif
