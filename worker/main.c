/* main -- `statesaver-worker`: dispatch to the subcommands (unroll, bench, serve). */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "serve.h"
#include "ss_log.h"
#include "unroll_cmd.h"

/* Exit status for a bad command line. */
#define MAIN_EXIT_USAGE 2

/* One subcommand. */
typedef struct subcommand {
    const char *name;                 /* as typed */
    int (*run)(int argc, char **argv); /* argv[0] is the name */
    const char *summary;              /* one line for --help */
} subcommand;

static const subcommand commands[] = {
    {"unroll", ss_unroll_cmd_main, "run one static unroll over .npy files, offline"},
    {"bench", ss_bench_main, "time the unroll against in-process sgemm of the same flops"},
    {"serve", ss_serve_main, "lease segments from a server, unroll them, complete them"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: statesaver-worker COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'statesaver-worker COMMAND --help' describes a command.\n"
               "Options: --help, --version\n");
}

int main(int argc, char **argv)
{
    ss_log_set_component("statesaver-worker");
    if (argc < 2) {
        usage(stderr);
        return MAIN_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("statesaver-worker %s\n", SS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "statesaver-worker: unknown command '%s'\n", cmd);
    usage(stderr);
    return MAIN_EXIT_USAGE;
}
