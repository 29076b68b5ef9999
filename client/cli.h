/* cli -- shared pieces of the `statesaver` command-line program.
 *
 * Exit statuses: 0 success, 1 runtime failure (network, server, files),
 * 2 usage error. Messages go to stderr prefixed with "statesaver: ".
 */
#ifndef SS_CLI_H
#define SS_CLI_H

#include <stddef.h>

#include "statesaver.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2
/* Default server when neither --server nor STATESAVER_SERVER is given. */
#define CLI_DEFAULT_SERVER "127.0.0.1:7450"
/* Largest token file accepted (bytes). */
#define CLI_TOKEN_MAX 4096u

/* Global options, shared by every command. */
typedef struct cli_ctx {
    const char *server;  /* HOST:PORT to talk to */
    int timeout_ms;      /* per-call timeout */
    char *token;         /* auth token (owned) or NULL */
    size_t token_len;    /* bytes of token */
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

/* Parse a non-negative decimal integer with an upper bound. */
int cli_parse_u64(const char *s, unsigned long long max, unsigned long long *out);

/* Commands: argv[0] is the command name; return the exit status. */
int cli_cmd_ping(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_declare(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_fetch(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_save(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_ls(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_drop(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_stats(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_bench(const cli_ctx *ctx, int argc, char **argv);
int cli_cmd_submit(const cli_ctx *ctx, int argc, char **argv); /* cli_submit.c */

#endif
