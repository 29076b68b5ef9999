/* unroll_internal -- the unroll workspace's internals, shared by unroll.c (API,
 * packing, buffers, threads) and unroll_step.c (the step loop). Not for
 * other modules.
 *
 * The weights of every layer are packed as S unit slices (S = the thread
 * count set last; 1 at first): slice s holds units [u0, u0 + nu) of every
 * gate block (and, for an lstm projection, output columns [p0, p0 + np)),
 * with u0 a multiple of SS_UNROLL_SLICE_ALIGN. A thread's part of a run is
 * a block of batch rows and a range of slices: all slices for its rows
 * (split by rows) or one slice for all rows (split by units).
 */
#ifndef SS_UNROLL_INTERNAL_H
#define SS_UNROLL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "barrier.h"
#include "cell.h"
#include "pgemm.h"
#include "unroll.h"

/* Slices start at multiples of this many units, so that the vector math
 * (16 lanes at most) cuts every gate block at the same places whatever the
 * slicing: a unit's result does not depend on its slice. */
#define SS_UNROLL_SLICE_ALIGN 16

/* One unit slice of one layer. */
typedef struct unroll_slice {
    int u0;                 /* first unit */
    int nu;                 /* units (0: an empty slice) */
    int p0;                 /* lstm num_proj: first projection column */
    int np;                 /* lstm num_proj: projection columns */
    ss_pgemm_w w;           /* basic, lstm: kernel [in+R, G*nu]; gru: gates
                             * [in+H, 2nu]; gru reset_after: kernel [in, 3nu] */
    ss_pgemm_w w2;          /* gru: candidate [in+H, nu]; gru reset_after:
                             * recurrent [H, 3nu]; else unused */
    ss_pgemm_w wp;          /* lstm num_proj: projection [H, np]; else unused */
    float *bias;            /* owned: the slice's bias, gate blocks of nu */
    ss_cell_args args;      /* gate math constants for the slice */
} unroll_slice;

/* Per-layer constants and slices. */
typedef struct unroll_layer {
    int in;                 /* input width of the layer */
    int H;                  /* units of the layer */
    int P;                  /* output width of the layer (projection or H) */
    bool proj;              /* lstm with a projection */
    int rw;                 /* width of the recurrent input h (P or H) */
    unroll_slice *sl;       /* owned: [S] */
} unroll_layer;

/* Per-thread scratch and the work of the current run. */
typedef struct unroll_part {
    int b0;                 /* first batch row */
    int nb;                 /* batch rows (0: nothing to do but the barriers) */
    int s0;                 /* first slice */
    int s1;                 /* one past the last slice */
    size_t cap;             /* rows the buffers below hold */
    float *ap;              /* pgemm scratch for cap rows */
    float *g;               /* [cap, G*H]: slice s at cap-independent offset nb*G*u0 */
    float *aux;             /* [cap, 3H]: gru reset_after h.R per slice */
    float *proj;            /* [cap, P]: lstm projection per slice */
} unroll_part;

/* Arguments of the ss_unroll_run in progress, read by every thread. */
typedef struct unroll_call {
    int teff;               /* steps computed */
    int B;                  /* batch rows */
    const float *inputs;    /* [T, B, input_size] */
    const int32_t *lengths; /* [B] or NULL */
    float *outputs;         /* [T, B, P] or NULL */
    bool units;             /* split by units: barriers in the step loop */
} unroll_call;

struct ss_unroll {
    const ss_model *m;      /* borrowed; outlives the workspace */
    ss_precision prec;      /* precision of the packed weights */
    int Hmax;               /* largest units of a layer (buffer widths) */
    int Pmax;               /* largest output width of a layer (buffer widths) */
    int P;                  /* output width of the last layer (the run's outputs) */
    int G;                  /* gate blocks of the main kernel (4, 3 or 1) */
    int L;                  /* number of layers */
    int S;                  /* unit slices per layer */
    int n_states;           /* states in the flattened TF order */
    int state_w[2 * SS_MODEL_MAX_LAYERS]; /* width of each state */
    unroll_layer layers[SS_MODEL_MAX_LAYERS]; /* L used */
    size_t ybuf_cap[2];     /* T*B rows each ybuf holds */
    float *ybuf[2];         /* [ybuf_cap, P] outputs of inner layers, alternating */
    size_t b_cap;           /* batch rows the state buffer holds */
    float *state;           /* states packed in order, each [B, width] */
    size_t m_cap;           /* batch rows mbuf holds */
    float *mbuf;            /* [B, H]: gru r*h, lstm m before the projection */
    int threads;            /* parts per run: the caller plus threads-1 workers */
    ss_unroll_split split;  /* forced split, or AUTO */
    ss_unroll_split last;   /* split of the last run */
    unroll_part *parts;     /* owned: [threads] */
    pthread_t *workers;     /* owned: [threads-1], running while threads > 1 */
    ss_barrier start;       /* all threads: a run (or quit) begins */
    ss_barrier end;         /* all threads: the run is over */
    ss_barrier step;        /* all threads: inside the step loop (units split) */
    bool quit;              /* workers exit at the next start */
    unroll_call call;       /* the run in progress */
};

/* Every layer for part idx of the current run (unroll_step.c). */
void ss_unroll_run_part(ss_unroll *u, int idx);

/* State i of the workspace for a batch of B rows (states packed in order). */
float *ss_unroll_state_ptr(ss_unroll *u, int i, int B);

#endif
