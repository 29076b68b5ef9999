/* fuzz_jobrec -- libFuzzer harness for the job record decoder
 * (server/jobs_store.h: ss_job_rec_decode, ss_job_rec_final_next).
 *
 * The input is one stored record value. When it decodes:
 *   - every blob it points at (saver, key, reason, inputs of
 *     in_rows * in_cols float32, outputs, each final state's name and data,
 *     the training extension) lies inside the value, computed without
 *     overflow, and is read (so ASan sees any stray pointer);
 *   - the final states iterate exactly n_final times and end where the
 *     extension (ext_len bytes at the value's end) begins;
 *   - encoding the decoded record gives back the value (up to the one
 *     field the encoder normalises: the `last` byte), and decoding that
 *     gives the same record. The word at offset 36 was reserved (zero)
 *     before the training fields; it is ext_len now and round-trips.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jobs_store.h"

typedef unsigned __int128 u128;

static volatile uint8_t g_sink; /* keeps the reads below */

/* p[0..n) must lie inside buf[0..len); read it. */
static void inside(const uint8_t *buf, size_t len, const void *p, u128 n)
{
    if (n == 0)
        return;
    const uint8_t *q = p;
    if (!q || q < buf || (u128)(size_t)(q - buf) + n > (u128)len)
        abort();
    uint8_t acc = 0;
    for (size_t i = 0; i < (size_t)n; i++)
        acc ^= q[i];
    g_sink = acc;
}

static void check_record(const uint8_t *buf, size_t len, const ss_job_rec *r,
                         ss_job_tensor *finals)
{
    inside(buf, len, r->saver.data, r->saver.len);
    inside(buf, len, r->key.data, r->key.len);
    inside(buf, len, r->reason.data, r->reason.len);
    inside(buf, len, r->inputs, (u128)r->in_rows * r->in_cols * 4u);
    inside(buf, len, r->outputs, (u128)r->out_rows * r->out_cols * 4u);
    inside(buf, len, r->ext, r->ext_len);
    if (r->ext_len && r->ext + r->ext_len != buf + len)
        abort();
    if (r->final_len && r->final_blob + r->final_len != buf + len - r->ext_len)
        abort();
    size_t pos = 0, n = 0;
    ss_job_tensor t;
    int rc;
    while ((rc = ss_job_rec_final_next(r, &pos, &t)) == 1) {
        if (n == r->n_final || t.rank > SS_TENSOR_MAX_RANK)
            abort();
        inside(buf, len, t.name, t.name_len);
        inside(buf, len, t.data, t.nbytes);
        finals[n++] = t;
    }
    if (rc != 0 || n != r->n_final || pos != r->final_len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_job_rec rec, again;
    ss_job_tensor finals[256], finals2[256];
    if (ss_job_rec_decode(data, size, &rec) != 0)
        return 0;
    check_record(data, size, &rec, finals);

    rec.final = finals;
    size_t n = ss_job_rec_size(&rec);
    if (n == 0)
        return 0; /* a field the encoder cannot write (e.g. a long reason) */
    if (n != size)
        abort();
    uint8_t *enc = malloc(n);
    if (!enc)
        abort();
    ss_job_rec_encode(&rec, enc);
    /* The encoder writes last as 0/1. */
    uint8_t *want = malloc(size);
    if (!want)
        abort();
    memcpy(want, data, size);
    want[2] = rec.last ? 1 : 0;
    if (memcmp(enc, want, size) != 0)
        abort();
    if (ss_job_rec_decode(enc, n, &again) != 0)
        abort();
    check_record(enc, n, &again, finals2);
    if (again.state != rec.state || again.last != rec.last ||
        again.length != rec.length || again.attempts != rec.attempts ||
        again.segment != rec.segment || again.submit_ms != rec.submit_ms ||
        again.done_ms != rec.done_ms || again.n_final != rec.n_final ||
        again.is_ctx != rec.is_ctx || again.ext_len != rec.ext_len)
        abort();
    free(want);
    free(enc);
    return 0;
}
