/* bench -- `statesaver-worker bench`: unroll throughput against in-process sgemm. */
#ifndef SS_BENCH_H
#define SS_BENCH_H

/* Entry point for the `bench` subcommand; argv[0] is "bench".
 * Returns the process exit status. */
int ss_bench_main(int argc, char **argv);

#endif
