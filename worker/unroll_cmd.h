/* unroll_cmd -- `statesaver-worker unroll`: run one static unroll over .npy
 * files, offline (no server).
 *
 * Every input (model, inputs, lengths, states) and every --state and
 * --final-state name is validated before anything is computed; outputs are
 * written to temporary files and renamed into place only after the whole
 * run succeeded, so a failed run leaves no output file behind.
 */
#ifndef SS_UNROLL_CMD_H
#define SS_UNROLL_CMD_H

/* Exit statuses of the command. */
#define SS_UNROLL_EXIT_OK 0
#define SS_UNROLL_EXIT_FAIL 1  /* writing an output failed, out of memory */
#define SS_UNROLL_EXIT_USAGE 2 /* bad flags, bad input files or shapes */

/* Default OpenBLAS threads when neither --threads nor OPENBLAS_NUM_THREADS /
 * OMP_NUM_THREADS is given. */
#define SS_UNROLL_DEFAULT_THREADS 1
/* Largest --threads accepted. */
#define SS_UNROLL_MAX_THREADS 1024

/* Entry point; argv[0] is "unroll". Returns the process exit status. */
int ss_unroll_cmd_main(int argc, char **argv);

#endif
