/* conn -- one client connection: frame reader, reply writer, backpressure,
 * admission (accept, eviction of fresh connections). */
#include "conn.h"
#include "conn_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_frame.h"
#include "ss_log.h"
#include "statesaver.pb-c.h"

static void conn_process(ss_conn *c);

static uint64_t conn_now(const ss_conn *c)
{
    return uv_now(c->set->loop);
}

/* Output accounting: per connection and over the set. */
static void out_add(ss_conn *c, uint64_t n)
{
    c->out_bytes += n;
    c->set->out_total += n;
}

static void out_sub(ss_conn *c, uint64_t n)
{
    c->out_bytes -= n;
    c->set->out_total -= n;
}

#define CHUNK_OF(p) ((out_chunk *)((uint8_t *)(p) - offsetof(out_chunk, data)))

uint8_t *ss_conn_frame_alloc(size_t len)
{
    if (len > SIZE_MAX - sizeof(out_chunk))
        return NULL;
    out_chunk *ch = malloc(sizeof *ch + len);
    if (!ch)
        return NULL;
    ch->next = NULL;
    ch->len = len;
    ch->off = 0;
    return ch->data;
}

void ss_conn_frame_free(uint8_t *frame)
{
    if (frame)
        free(CHUNK_OF(frame));
}

static void chunks_free(out_chunk *ch)
{
    while (ch) {
        out_chunk *next = ch->next;
        free(ch);
        ch = next;
    }
}

void ss_conn_ref(ss_conn *c)
{
    c->refs++;
}

void ss_conn_unref(ss_conn *c)
{
    if (!c || --c->refs > 0)
        return;
    chunks_free(c->out_head);
    free(c->rbuf);
    free(c);
}

bool ss_conn_closed(const ss_conn *c)
{
    return c->closing || c->close_pending || c->close_soon;
}

void ss_conn_close_soon(ss_conn *c, const char *reason)
{
    if (c->closing || c->close_soon)
        return;
    c->close_soon = reason;
    conn_update_reading(c);
    conn_mark_dirty(c);
}

bool ss_conn_authed(const ss_conn *c)
{
    return c->authed;
}

void ss_conn_set_authed(ss_conn *c)
{
    c->authed = true;
}

void ss_conn_set_data(ss_conn *c, void *data)
{
    c->data = data;
}

void *ss_conn_data(const ss_conn *c)
{
    return c->data;
}

const char *ss_conn_peer(const ss_conn *c)
{
    return c->peer;
}

static bool over_output_limit(const ss_conn *c)
{
    return c->out_bytes > c->set->cfg->max_output_bytes;
}

/* The cap of each request class (0 = none). */
static unsigned class_cap(const ss_conn *c, int cls)
{
    switch (cls) {
    case SS_CONN_CLASS_PARKED: return c->set->cfg->max_parked_per_conn;
    case SS_CONN_CLASS_WRITE: return c->set->cfg->max_pending_writes_per_conn;
    default: return 0;
    }
}

/* A class is at its cap: read and dispatch nothing until one is answered. */
static bool at_request_cap(const ss_conn *c)
{
    for (int k = 0; k < SS_CONN_CLASSES; k++) {
        unsigned cap = class_cap(c, k);
        if (cap && c->by_class[k] >= cap)
            return true;
    }
    return false;
}

static void fresh_unlink(ss_conn *c)
{
    ss_conn_set *s = c->set;
    if (!c->fresh)
        return;
    c->fresh = false;
    if (c->fresh_prev)
        c->fresh_prev->fresh_next = c->fresh_next;
    else
        s->fresh_new = c->fresh_next;
    if (c->fresh_next)
        c->fresh_next->fresh_prev = c->fresh_prev;
    else
        s->fresh_old = c->fresh_prev;
    c->fresh_prev = c->fresh_next = NULL;
    s->n_fresh--;
}

static void fresh_link(ss_conn *c)
{
    ss_conn_set *s = c->set;
    c->fresh = true;
    c->fresh_prev = NULL;
    c->fresh_next = s->fresh_new;
    if (s->fresh_new)
        s->fresh_new->fresh_prev = c;
    else
        s->fresh_old = c;
    s->fresh_new = c;
    s->n_fresh++;
}

static void on_close(uv_handle_t *h)
{
    ss_conn_unref(h->data);
}

void ss_conn_close(ss_conn *c, const char *reason)
{
    if (c->closing)
        return;
    ss_conn_set *s = c->set;
    c->closing = true;
    SS_LOG(SS_LOG_DEBUG, "connection %s closed: %s", c->peer, reason);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    fresh_unlink(c);
    if (!c->rejected)
        s->open--;
    /* Queued output can no longer be sent. */
    for (out_chunk *ch = c->out_head; ch; ch = ch->next)
        out_sub(c, ch->len - ch->off);
    chunks_free(c->out_head);
    c->out_head = c->out_tail = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_close);
    if (s->ev.closed && !s->ev.closed(s->ev.arg, c))
        conn_close_event_later(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    ss_conn *c = req->data;
    if (status < 0 && !c->closing)
        ss_conn_close(c, "shutdown failed");
    ss_conn_unref(c);
}

/* The largest frame payload c may send now: --max-frame-bytes, or only
 * --max-unauth-frame-bytes until Hello succeeded (with a token), so an
 * unauthenticated peer cannot make the server buffer a big frame. */
static size_t conn_frame_limit(const ss_conn *c)
{
    const ss_config *cfg = c->set->cfg;
    if (c->authed || cfg->max_unauth_frame_bytes >= cfg->max_frame_bytes)
        return cfg->max_frame_bytes;
    return cfg->max_unauth_frame_bytes;
}

/* A whole frame (or an oversized header) waits in the read buffer, held
 * back by backpressure: a peer that half-closed still gets its answer. */
bool conn_has_frame(const ss_conn *c)
{
    const uint8_t *payload;
    size_t plen, consumed;
    return ss_frame_decode(c->rbuf, c->rlen, conn_frame_limit(c), &payload,
                           &plen, &consumed, NULL) != SS_FRAME_NEED_MORE;
}

/* Output is fully written: finish a pending close or an EOF. */
static void conn_maybe_finish(ss_conn *c)
{
    if (c->closing || c->out_head || c->writes)
        return;
    if (c->close_pending && !c->lingering) {
        if (c->set->stopping || c->eof) {
            ss_conn_close(c, "closed after error reply");
            return;
        }
        /* Half-close so the peer sees our reply then EOF, and drain what
         * it still sends rather than resetting the connection. */
        c->shut.data = c;
        if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
            ss_conn_close(c, "shutdown failed");
            return;
        }
        ss_conn_ref(c);
        c->lingering = true;
        c->linger_start = conn_now(c);
        c->rlen = 0;
        conn_update_reading(c);
        return;
    }
    if (c->eof && c->inflight == 0 && !c->close_pending &&
        !conn_has_frame(c))
        ss_conn_close(c, "peer finished");
}

void ss_conn_close_after_flush(ss_conn *c, const char *reason)
{
    if (c->closing || c->close_pending)
        return;
    SS_LOG(SS_LOG_DEBUG, "connection %s closing after flush: %s", c->peer,
           reason);
    c->close_pending = true;
    conn_update_reading(c);
    if (c->out_head)
        conn_mark_dirty(c);
    else
        conn_maybe_finish(c);
}

static bool conn_want_read(const ss_conn *c)
{
    if (c->closing)
        return false;
    if (c->lingering)
        return !c->eof;
    return !c->close_pending && !c->close_soon && !c->eof && !c->set->stopping &&
           !over_output_limit(c) && !at_request_cap(c) && c->rcap > c->rlen;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ss_conn *c = h->data;
    (void)suggested;
    buf->base = (char *)c->rbuf + c->rlen;
    buf->len = c->rcap - c->rlen;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ss_conn *c = s->data;
    (void)buf;
    if (c->closing)
        return;
    if (nread > 0) {
        if (c->lingering)
            return; /* discarded */
        c->rlen += (size_t)nread;
        conn_process(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_EOF) {
        c->eof = true;
        if (c->rlen > 0 && !c->lingering)
            SS_LOG(SS_LOG_DEBUG, "connection %s: %zu bytes of a truncated "
                   "frame at EOF", c->peer, c->rlen);
        if (c->lingering) {
            ss_conn_close(c, "peer closed after error reply");
            return;
        }
        conn_update_reading(c);
        conn_maybe_finish(c);
        return;
    }
    if (nread == UV_ENOBUFS) {
        conn_update_reading(c);
        return;
    }
    ss_conn_close(c, uv_strerror((int)nread));
}

void conn_update_reading(ss_conn *c)
{
    bool want = conn_want_read(c);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
        /* The peer could not send while we did not read: the incomplete
         * frame's deadline starts again. */
        if (c->frame_start)
            c->frame_start = conn_now(c);
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Dispatch every whole frame at the front of the read buffer. */
static void conn_process(ss_conn *c)
{
    ss_conn_set *s = c->set;
    if (c->processing)
        return;
    c->processing = true;
    ss_conn_ref(c);
    size_t pos = 0;
    size_t grow_to = 0;
    for (;;) {
        if (c->closing || c->close_pending || c->close_soon || s->stopping ||
            over_output_limit(c) || at_request_cap(c))
            break;
        const uint8_t *payload = NULL;
        size_t plen = 0, consumed = 0, need = 0;
        size_t limit = conn_frame_limit(c);
        int rc = ss_frame_decode(c->rbuf + pos, c->rlen - pos, limit,
                                 &payload, &plen, &consumed, &need);
        if (rc == SS_FRAME_NEED_MORE) {
            if (need > c->rcap)
                grow_to = need;
            break;
        }
        if (rc < 0) {
            const uint8_t *h = c->rbuf + pos;
            uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                         ((uint32_t)h[2] << 8) | (uint32_t)h[3];
            char msg[200];
            int code = STATESAVER__V1__CODE__RESOURCE_EXHAUSTED;
            int why = SS_CONN_REFUSED_FRAME_TOO_BIG;
            if (!c->authed && limit < s->cfg->max_frame_bytes) {
                /* Nothing of it is buffered: refused at its header. */
                snprintf(msg, sizeof msg, "frame of %" PRIu32 " bytes before "
                         "authentication exceeds the limit of %zu bytes "
                         "(--max-unauth-frame-bytes): send Hello with the "
                         "token first", n, limit);
                code = STATESAVER__V1__CODE__UNAUTHENTICATED;
                why = SS_CONN_REFUSED_UNAUTH_FRAME;
            } else {
                snprintf(msg, sizeof msg, "frame of %" PRIu32 " bytes exceeds "
                         "the limit of %zu bytes (--max-frame-bytes)", n,
                         limit);
            }
            SS_LOG(SS_LOG_WARN, "connection %s: %s", c->peer, msg);
            pos = c->rlen;
            if (s->ev.refused)
                s->ev.refused(s->ev.refused_arg, (ss_conn_refusal)why);
            s->ev.error(s->ev.arg, c, code, msg);
            break;
        }
        pos += consumed;
        c->last_active = conn_now(c);
        s->ev.frame(s->ev.arg, c, payload, plen);
        /* A first complete request while authenticated: no longer fresh. */
        if (c->fresh && c->authed)
            fresh_unlink(c);
    }
    if (pos > 0) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
        c->frame_start = 0;
    }
    /* The deadline of the incomplete frame at the front starts with its
     * first byte here. */
    if (c->rlen == 0)
        c->frame_start = 0;
    else if (c->frame_start == 0)
        c->frame_start = conn_now(c);
    /* Authenticated now: the small pre-Hello buffer may grow back. */
    if (grow_to == 0 && c->authed && c->rcap < SS_CONN_READ_INITIAL)
        grow_to = SS_CONN_READ_INITIAL;
    if (grow_to > 0 && !c->closing) {
        /* grow_to is at most header + the frame limit: checked above. */
        uint8_t *nb = realloc(c->rbuf, grow_to);
        if (!nb) {
            s->ev.error(s->ev.arg, c, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                        "out of memory for the frame");
        } else {
            c->rbuf = nb;
            c->rcap = grow_to;
        }
    } else if (c->rlen == 0 && c->rcap > SS_CONN_READ_INITIAL) {
        /* Do not keep a large frame's buffer on an idle connection. */
        uint8_t *nb = realloc(c->rbuf, SS_CONN_READ_INITIAL);
        if (nb) {
            c->rbuf = nb;
            c->rcap = SS_CONN_READ_INITIAL;
        }
    }
    c->processing = false;
    conn_update_reading(c);
    ss_conn_unref(c);
}

/* Output shrank or a request finished: maybe read again, finish a close. */
void conn_output_progress(ss_conn *c)
{
    if (c->closing)
        return;
    if (!over_output_limit(c) && c->rlen > 0 && !c->lingering)
        conn_process(c);
    else
        conn_update_reading(c);
    conn_maybe_finish(c);
}

void ss_conn_request_started(ss_conn *c, ss_conn_class cls)
{
    c->inflight++;
    c->by_class[cls]++;
}

void ss_conn_request_done(ss_conn *c, ss_conn_class cls)
{
    bool was_capped = at_request_cap(c);
    c->inflight--;
    c->by_class[cls]--;
    c->last_active = conn_now(c);
    if (was_capped && !at_request_cap(c) && !c->closing) {
        /* Resume in the flush step, not inside the answering code. */
        c->resume = true;
        conn_mark_dirty(c);
    }
    if (c->eof && c->inflight == 0)
        conn_maybe_finish(c);
}

void ss_conn_send(ss_conn *c, uint8_t *frame, size_t len)
{
    out_chunk *ch = CHUNK_OF(frame);
    /* After the half-close nothing more can be sent. */
    if (c->closing || c->lingering || c->close_soon) {
        free(ch);
        return;
    }
    ch->len = len;
    ch->off = 0;
    ch->next = NULL;
    if (c->out_tail)
        c->out_tail->next = ch;
    else
        c->out_head = ch;
    c->out_tail = ch;
    out_add(c, len);
    conn_mark_dirty(c);
    if (over_output_limit(c))
        conn_update_reading(c);
}

static void on_write(uv_write_t *req, int status)
{
    out_write *w = req->data;
    ss_conn *c = w->conn;
    chunks_free(w->chunks);
    out_sub(c, w->bytes);
    c->writes--;
    free(w);
    if (status < 0) {
        if (!c->closing)
            ss_conn_close(c, uv_strerror(status));
    } else if (!c->closing) {
        conn_output_progress(c);
    }
    ss_conn_unref(c);
}

/* Point bufs at the unsent part of the first SS_CONN_IOV_MAX queued chunks;
 * returns how many, their byte sum in *total. */
static unsigned out_gather(const ss_conn *c, uv_buf_t *bufs, size_t *total)
{
    unsigned nb = 0;
    *total = 0;
    for (const out_chunk *ch = c->out_head; ch && nb < SS_CONN_IOV_MAX; ch = ch->next) {
        bufs[nb] = uv_buf_init((char *)ch->data + ch->off, (unsigned)(ch->len - ch->off));
        *total += ch->len - ch->off;
        nb++;
    }
    return nb;
}

void conn_flush(ss_conn *c)
{
    uv_buf_t bufs[SS_CONN_IOV_MAX];
    if (c->closing)
        return;
    bool was_over = over_output_limit(c);
    while (c->out_head) {
        size_t total = 0;
        unsigned nb = out_gather(c, bufs, &total);
        if (c->writes == 0) {
            int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nb);
            if (n == UV_EAGAIN || n == UV_ENOSYS)
                n = 0;
            if (n < 0) {
                ss_conn_close(c, uv_strerror(n));
                return;
            }
            size_t left = (size_t)n;
            out_sub(c, left);
            while (left > 0) {
                out_chunk *ch = c->out_head;
                size_t avail = ch->len - ch->off;
                if (left < avail) {
                    ch->off += left;
                    break;
                }
                left -= avail;
                c->out_head = ch->next;
                if (!c->out_head)
                    c->out_tail = NULL;
                free(ch);
            }
            if ((size_t)n == total)
                continue;
            /* The socket is full: queue the rest of this batch. */
            nb = out_gather(c, bufs, &total);
        }
        out_write *w = malloc(sizeof *w);
        if (!w) {
            ss_conn_close(c, "out of memory for a write");
            return;
        }
        w->req.data = w;
        w->conn = c;
        w->bytes = total;
        /* Detach the nb chunks this write covers. */
        w->chunks = c->out_head;
        out_chunk *last = c->out_head;
        for (unsigned i = 1; i < nb; i++)
            last = last->next;
        c->out_head = last->next;
        if (!c->out_head)
            c->out_tail = NULL;
        last->next = NULL;
        int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nb, on_write);
        if (rc < 0) {
            out_sub(c, total);
            chunks_free(w->chunks);
            free(w);
            ss_conn_close(c, uv_strerror(rc));
            return;
        }
        ss_conn_ref(c);
        c->writes++;
    }
    if (was_over && !over_output_limit(c))
        conn_output_progress(c);
    else
        conn_maybe_finish(c);
}

/* Close the oldest fresh connection to make room for a newcomer. */
static void evict_oldest_fresh(ss_conn_set *s, const char *why)
{
    ss_conn *old = s->fresh_old;
    /* Debug level: under a flood this runs per connection (the metric
     * statesaver_rejected_total{reason="evicted"} counts them). */
    SS_LOG(SS_LOG_DEBUG, "evicting connection %s (no complete request for %"
           PRIu64 " ms) for a new one: %s", old->peer,
           uv_now(s->loop) - old->last_active, why);
    if (s->ev.refused)
        s->ev.refused(s->ev.refused_arg, SS_CONN_REFUSED_EVICTED);
    ss_conn_close(old, "evicted for a new connection");
}

int ss_conn_accept(ss_conn_set *s, uv_stream_t *listener)
{
    const ss_config *cfg = s->cfg;
    bool reject = false;
    if (s->open >= cfg->max_connections) {
        if (s->fresh_old)
            evict_oldest_fresh(s, "--max-connections reached");
        else
            reject = true;
    }
    if (!reject && s->n_fresh >= cfg->max_unauth_conns && s->fresh_old)
        evict_oldest_fresh(s, "--max-unauth-connections reached");
    ss_conn *c = calloc(1, sizeof *c);
    if (!c)
        return SS_ERR_NOMEM;
    c->set = s;
    c->refs = 1;
    c->rejected = reject;
    c->authed = cfg->token == NULL;
    /* Before Hello only a small frame may come: a small buffer will do. */
    size_t cap = SS_CONN_READ_INITIAL;
    if (SS_FRAME_HEADER + (size_t)conn_frame_limit(c) < cap)
        cap = SS_FRAME_HEADER + conn_frame_limit(c);
    c->rbuf = malloc(cap);
    if (!c->rbuf) {
        free(c);
        return SS_ERR_NOMEM;
    }
    c->rcap = cap;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    int rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        SS_LOG(SS_LOG_WARN, "accept failed: %s", uv_strerror(rc));
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return SS_ERR_IO;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        char ip[48] = "?";
        int port = 0;
        if (sa.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&sa;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
            snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
        } else if (sa.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&sa;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
            snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, port);
        }
    }
    c->last_active = uv_now(s->loop);
    c->next = s->all;
    if (s->all)
        s->all->prev = c;
    s->all = c;
    if (reject) {
        if (s->ev.refused)
            s->ev.refused(s->ev.refused_arg, SS_CONN_REFUSED_MAX_CONNECTIONS);
        SS_LOG(SS_LOG_WARN, "connection %s refused: %" PRIu64 " connections "
               "open (--max-connections %u), none of them fresh", c->peer,
               s->open, cfg->max_connections);
        char msg[128];
        snprintf(msg, sizeof msg, "too many connections (limit %u, "
                 "--max-connections)", cfg->max_connections);
        s->ev.error(s->ev.arg, c, STATESAVER__V1__CODE__UNAVAILABLE, msg);
        return 0;
    }
    s->open++;
    s->accepted++;
    fresh_link(c);
    SS_LOG(SS_LOG_DEBUG, "connection %s accepted", c->peer);
    conn_update_reading(c);
    return 0;
}

