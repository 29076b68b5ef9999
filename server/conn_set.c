/* conn_set -- the set of a server's connections: flush handles and the
 * dirty list, the global output limit, sweeps (linger, frame deadline,
 * idle) and shutdown steps. */
#include <inttypes.h>
#include <stdlib.h>

#include "conn.h"
#include "conn_internal.h"
#include "ss_error.h"
#include "ss_log.h"

/* ---- the set ---- */

static void on_flush_idle(uv_idle_t *h)
{
    ss_conn_flush_all(h->data);
}

static void on_flush_check(uv_check_t *h)
{
    ss_conn_flush_all(h->data);
}

int ss_conn_set_new(ss_conn_set **out, uv_loop_t *loop, const ss_config *cfg)
{
    ss_conn_set *s = calloc(1, sizeof *s);
    if (!s)
        return SS_ERR_NOMEM;
    s->loop = loop;
    s->cfg = cfg;
    uv_idle_init(loop, &s->flush_idle);
    uv_check_init(loop, &s->flush_check);
    s->flush_idle.data = s->flush_check.data = s;
    s->handles_open = true;
    uv_check_start(&s->flush_check, on_flush_check);
    *out = s;
    return 0;
}

void ss_conn_set_events(ss_conn_set *s, const ss_conn_events *ev)
{
    s->ev = *ev;
}

void ss_conn_set_close_handles(ss_conn_set *s)
{
    if (!s || !s->handles_open)
        return;
    s->handles_open = false;
    if (!uv_is_closing((uv_handle_t *)&s->flush_idle))
        uv_close((uv_handle_t *)&s->flush_idle, NULL);
    if (!uv_is_closing((uv_handle_t *)&s->flush_check))
        uv_close((uv_handle_t *)&s->flush_check, NULL);
}

void ss_conn_set_free(ss_conn_set *s)
{
    free(s);
}

uint64_t ss_conn_set_open(const ss_conn_set *s)
{
    return s->open;
}

uint64_t ss_conn_set_accepted(const ss_conn_set *s)
{
    return s->accepted;
}

bool ss_conn_set_empty(const ss_conn_set *s)
{
    return s->all == NULL;
}

void conn_mark_dirty(ss_conn *c)
{
    ss_conn_set *s = c->set;
    if (c->dirty)
        return;
    c->dirty = true;
    ss_conn_ref(c);
    c->dirty_next = s->dirty;
    s->dirty = c;
    /* An active idle handle keeps the next poll from blocking, so replies
     * queued from timer callbacks leave in this iteration too. */
    if (s->handles_open)
        uv_idle_start(&s->flush_idle, on_flush_idle);
}

/* Over --max-output-bytes-total: close the connections holding the most
 * output until under it (as Redis does past client-output-buffer-limit). */
static void enforce_output_total(ss_conn_set *s)
{
    while (s->out_total > s->cfg->max_output_total) {
        ss_conn *worst = NULL;
        for (ss_conn *c = s->all; c; c = c->next)
            if (!c->closing && c->out_head &&
                (!worst || c->out_bytes > worst->out_bytes))
                worst = c;
        if (!worst)
            return;
        SS_LOG(SS_LOG_WARN, "closing connection %s: %" PRIu64 " bytes of "
               "replies unread while all connections hold %" PRIu64
               " (--max-output-bytes-total %" PRIu64 ")", worst->peer,
               worst->out_bytes, s->out_total, s->cfg->max_output_total);
        if (s->ev.refused)
            s->ev.refused(s->ev.refused_arg, SS_CONN_REFUSED_OUTPUT_TOTAL);
        ss_conn_close(worst, "over the total output limit");
    }
}

/* Run the `closed` event again in the next flush step (a later loop
 * iteration: the flush idle keeps the loop from blocking meanwhile). */
void conn_close_event_later(ss_conn *c)
{
    ss_conn_set *s = c->set;
    ss_conn_ref(c);
    c->later_next = s->later;
    s->later = c;
    if (s->handles_open)
        uv_idle_start(&s->flush_idle, on_flush_idle);
}

void ss_conn_flush_all(ss_conn_set *s)
{
    enforce_output_total(s);
    /* Closed connections with cancellation work left: one more batch
     * each (one that still has work goes back on the list). */
    ss_conn *later = s->later;
    s->later = NULL;
    while (later) {
        ss_conn *c = later;
        later = c->later_next;
        c->later_next = NULL;
        if (!s->ev.closed(s->ev.arg, c))
            conn_close_event_later(c);
        ss_conn_unref(c);
    }
    while (s->dirty) {
        ss_conn *c = s->dirty;
        s->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->dirty = false;
        if (c->close_soon && !c->closing)
            ss_conn_close(c, c->close_soon);
        if (c->resume) {
            c->resume = false;
            if (!c->closing)
                conn_output_progress(c);
        }
        conn_flush(c);
        ss_conn_unref(c);
    }
    if (s->handles_open && !s->later)
        uv_idle_stop(&s->flush_idle);
}

void ss_conn_sweep(ss_conn_set *s, uint64_t timeout_ms)
{
    uint64_t now = uv_now(s->loop);
    uint64_t frame_ms = s->cfg->frame_timeout_ms;
    ss_conn *next;
    for (ss_conn *c = s->all; c; c = next) {
        next = c->next;
        if (c->closing)
            continue;
        if (c->lingering) {
            if (now - c->linger_start >= SS_CONN_LINGER_MS)
                ss_conn_close(c, "linger time over");
            continue;
        }
        if (frame_ms && c->frame_start && c->reading && !c->close_pending &&
            now - c->frame_start >= frame_ms && !conn_has_frame(c)) {
            SS_LOG(SS_LOG_INFO, "closing connection %s: a frame begun %"
                   PRIu64 " ms ago is still incomplete (%zu bytes; "
                   "--frame-timeout-ms %" PRIu64 ")", c->peer,
                   now - c->frame_start, c->rlen, frame_ms);
            if (s->ev.refused)
                s->ev.refused(s->ev.refused_arg, SS_CONN_REFUSED_FRAME_TIMEOUT);
            ss_conn_close(c, "frame timeout");
            continue;
        }
        if (timeout_ms == 0 || c->inflight > 0 || c->out_head || c->writes)
            continue;
        if (now - c->last_active >= timeout_ms) {
            SS_LOG(SS_LOG_INFO, "closing idle connection %s (no request for %"
                   PRIu64 " ms, --idle-timeout-ms %" PRIu64 ")", c->peer,
                   now - c->last_active, timeout_ms);
            ss_conn_close(c, "idle");
        }
    }
}

void ss_conn_stop_all(ss_conn_set *s)
{
    s->stopping = true;
    for (ss_conn *c = s->all; c; c = c->next)
        conn_update_reading(c);
}

void ss_conn_close_all(ss_conn_set *s, bool flush)
{
    ss_conn *next;
    for (ss_conn *c = s->all; c; c = next) {
        next = c->next;
        if (flush && (c->out_head || c->writes)) {
            c->close_pending = true;
            c->lingering = false;
            conn_update_reading(c);
            conn_mark_dirty(c);
        } else {
            ss_conn_close(c, "server shutting down");
        }
    }
}
