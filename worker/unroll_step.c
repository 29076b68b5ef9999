/* unroll_step -- the step loop of the static unroll (see unroll_internal.h).
 *
 * Per step and layer, for the part's rows and slices:
 *   1. the products of every slice: [x_t | h] . W_s (gru reset_after:
 *      x_t . W_s and h . R_s) into the part's pre-activation blocks;
 *   2. barrier (split by units: every thread has read the whole h);
 *   3. the gate math of every slice writes its units of the state (gru
 *      reset_after=false first writes r*h, meets the others at a barrier,
 *      then runs [x_t | r*h] . W_c; an lstm projection writes m, meets at a
 *      barrier, then projects its output columns);
 *   4. barrier (the new h is complete before the next step reads it).
 * Split by rows, the barriers are skipped: the part owns its rows of every
 * buffer. Inner layers write ybuf[0] and ybuf[1] alternately, so that a
 * layer never overwrites its input while another thread still reads it.
 */
#include <string.h>

#include "unroll_internal.h"

static inline void sync(ss_unroll *u)
{
    if (u->call.units)
        ss_barrier_wait(&u->step);
}

/* Zero the part's columns of rows [0, nb) of y (row stride P). */
static void zero_out(const unroll_layer *ul, const unroll_part *pt, float *y)
{
    const bool proj = ul->proj;
    for (int s = pt->s0; s < pt->s1; s++) {
        const unroll_slice *sl = &ul->sl[s];
        int c0 = proj ? sl->p0 : sl->u0, nc = proj ? sl->np : sl->nu;
        if (nc == 0)
            continue;
        for (int b = 0; b < pt->nb; b++)
            memset(y + (size_t)b * (size_t)ul->P + (size_t)c0, 0, (size_t)nc * sizeof(float));
    }
}

/* Layer l over steps [0, teff) for the part: x [teff, B, in] in, y
 * [teff, B, P] out (row stride B between steps). */
static void run_layer(ss_unroll *u, unroll_part *pt, int l, const float *x, float *y)
{
    const ss_model *m = u->m;
    const unroll_layer *ul = &u->layers[l];
    const unroll_call *cl = &u->call;
    const int H = ul->H, P = ul->P, in = ul->in, nb = pt->nb, b0 = pt->b0, B = cl->B;
    const size_t rows = (size_t)nb;
    float *c = NULL, *h;
    if (m->cell == SS_CELL_LSTM) {
        c = ss_unroll_state_ptr(u, 2 * l, B) + (size_t)b0 * (size_t)H;
        h = ss_unroll_state_ptr(u, 2 * l + 1, B) + (size_t)b0 * (size_t)P;
    } else {
        h = ss_unroll_state_ptr(u, l, B) + (size_t)b0 * (size_t)H;
    }
    float *mb = u->mbuf + (size_t)b0 * (size_t)H;
    const int32_t *len = cl->lengths ? cl->lengths + b0 : NULL;
    /* Steps past the longest row of the part only output zeros. Split by
     * units every part has all rows, so every thread gets the same tp and
     * meets the same barriers. */
    int tp = cl->teff;
    if (len) {
        tp = 0;
        for (int b = 0; b < nb; b++)
            tp = len[b] > tp ? len[b] : tp;
    }
    float *ap = pt->ap;
    for (int t = 0; t < cl->teff; t++) {
        const float *xt = x + ((size_t)t * (size_t)B + (size_t)b0) * (size_t)in;
        float *yt = y + ((size_t)t * (size_t)B + (size_t)b0) * (size_t)P;
        if (t >= tp) {
            zero_out(ul, pt, yt);
            continue;
        }
        ss_cell_mask mk = {len, t};
        switch (m->cell) {
        case SS_CELL_BASIC_RNN:
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (sl->nu)
                    ss_pgemm(&sl->w, nb, xt, in, in, h, H, pt->g + rows * (size_t)sl->u0, sl->nu,
                             false, ap);
            }
            sync(u);
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (sl->nu)
                    ss_cell_basic(&sl->args, nb, mk, pt->g + rows * (size_t)sl->u0, h + sl->u0,
                                  yt + sl->u0, P);
            }
            break;
        case SS_CELL_LSTM:
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (sl->nu)
                    ss_pgemm(&sl->w, nb, xt, in, in, h, P, pt->g + rows * 4 * (size_t)sl->u0,
                             4 * sl->nu, false, ap);
            }
            sync(u);
            if (!ul->proj) {
                for (int s = pt->s0; s < pt->s1; s++) {
                    const unroll_slice *sl = &ul->sl[s];
                    if (sl->nu)
                        ss_cell_lstm(&sl->args, nb, mk, pt->g + rows * 4 * (size_t)sl->u0,
                                     c + sl->u0, h + sl->u0, yt + sl->u0, P);
                }
                break;
            }
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (sl->nu)
                    ss_cell_lstm(&sl->args, nb, mk, pt->g + rows * 4 * (size_t)sl->u0,
                                 c + sl->u0, mb + sl->u0, NULL, 0);
            }
            sync(u); /* m complete */
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (!sl->np)
                    continue;
                float *pr = pt->proj + rows * (size_t)sl->p0;
                const size_t np = (size_t)sl->np;
                ss_pgemm(&sl->wp, nb, mb, H, H, NULL, 0, pr, sl->np, false, ap);
                for (int b = 0; b < nb; b++) {
                    float *yr = yt + (size_t)b * (size_t)P + (size_t)sl->p0;
                    if (len && t >= len[b]) {
                        memset(yr, 0, np * sizeof(float));
                        continue;
                    }
                    memcpy(h + (size_t)b * (size_t)P + (size_t)sl->p0, pr + (size_t)b * np,
                           np * sizeof(float));
                    memcpy(yr, pr + (size_t)b * np, np * sizeof(float));
                }
            }
            break;
        case SS_CELL_GRU:
            if (m->reset_after) {
                for (int s = pt->s0; s < pt->s1; s++) {
                    const unroll_slice *sl = &ul->sl[s];
                    if (!sl->nu)
                        continue;
                    ss_pgemm(&sl->w, nb, xt, in, in, NULL, 0, pt->g + rows * 3 * (size_t)sl->u0,
                             3 * sl->nu, false, ap);
                    ss_pgemm(&sl->w2, nb, h, H, H, NULL, 0, pt->aux + rows * 3 * (size_t)sl->u0,
                             3 * sl->nu, false, ap);
                }
                sync(u);
                for (int s = pt->s0; s < pt->s1; s++) {
                    const unroll_slice *sl = &ul->sl[s];
                    if (sl->nu)
                        ss_cell_gru_ra(&sl->args, nb, mk, pt->g + rows * 3 * (size_t)sl->u0,
                                       pt->aux + rows * 3 * (size_t)sl->u0, h + sl->u0,
                                       yt + sl->u0, P);
                }
                break;
            }
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (!sl->nu)
                    continue;
                float *gs = pt->g + rows * 3 * (size_t)sl->u0;
                ss_pgemm(&sl->w, nb, xt, in, in, h, H, gs, 3 * sl->nu, false, ap);
                ss_cell_gru_gates(&sl->args, nb, mk, gs, h + sl->u0, mb + sl->u0);
            }
            sync(u); /* r*h complete; every thread has read h */
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (!sl->nu)
                    continue;
                float *gs = pt->g + rows * 3 * (size_t)sl->u0;
                ss_pgemm(&sl->w2, nb, xt, in, in, mb, H, gs + 2 * (size_t)sl->nu, 3 * sl->nu,
                         false, ap);
            }
            for (int s = pt->s0; s < pt->s1; s++) {
                const unroll_slice *sl = &ul->sl[s];
                if (sl->nu)
                    ss_cell_gru_cand(&sl->args, nb, mk, pt->g + rows * 3 * (size_t)sl->u0,
                                     h + sl->u0, yt + sl->u0, P);
            }
            break;
        }
        sync(u); /* the new state is complete */
    }
}

void ss_unroll_run_part(ss_unroll *u, int idx)
{
    unroll_part *pt = &u->parts[idx];
    const unroll_call *c = &u->call;
    if (pt->nb == 0 && !c->units)
        return;
    const float *x = c->inputs;
    for (int l = 0; l < u->L; l++) {
        float *y = (l == u->L - 1 && c->outputs) ? c->outputs : u->ybuf[l & 1];
        run_layer(u, pt, l, x, y);
        /* Split by units the next layer reads every thread's outputs. */
        sync(u);
        x = y;
    }
}
