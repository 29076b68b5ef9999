/* conn_internal -- the structures shared by conn.c (one connection) and
 * conn_set.c (the set: admission lists, dirty list, flush, sweeps). Not a
 * public header: everything else uses conn.h. */
#ifndef SS_CONN_INTERNAL_H
#define SS_CONN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conn.h"

/* After a protocol error the reply is written, our side is shut down and
 * further input is discarded for at most this long before closing, so the
 * peer reads the error instead of a reset caused by its unread bytes. */
#define SS_CONN_LINGER_MS 2000u

/* One queued output frame; data is what ss_conn_frame_alloc returned. */
typedef struct out_chunk {
    struct out_chunk *next; /* queue link */
    size_t len;             /* bytes in data */
    size_t off;             /* bytes already written */
    uint8_t data[];         /* the frame */
} out_chunk;

/* One uv_write in flight and the chunks it owns. */
typedef struct out_write {
    uv_write_t req;     /* libuv request; req.data = this */
    ss_conn *conn;      /* holds a reference */
    out_chunk *chunks;  /* freed in the callback */
    size_t bytes;       /* bytes handed to uv_write */
} out_write;

struct ss_conn_set {
    uv_loop_t *loop;          /* the server's loop */
    const ss_config *cfg;     /* limits (borrowed) */
    ss_conn_events ev;        /* upward events */
    ss_conn *all;             /* every connection (list head) */
    ss_conn *fresh_new;       /* fresh connections, newest first */
    ss_conn *fresh_old;       /* ... and the oldest (eviction end) */
    uint64_t n_fresh;         /* fresh connections */
    uint64_t open;            /* admitted and not closed */
    uint64_t accepted;        /* admitted since start */
    uint64_t out_total;       /* output bytes of all connections */
    ss_conn *dirty;           /* connections with output or a resume */
    ss_conn *later;           /* closed connections whose `closed` event
                                 has work left (each holds a reference) */
    bool stopping;            /* shutdown: read nothing more */
    uv_idle_t flush_idle;     /* keeps poll from blocking while dirty */
    uv_check_t flush_check;   /* flushes replies once per iteration */
    bool handles_open;        /* the two handles above are usable */
};

struct ss_conn {
    uv_tcp_t tcp;            /* the socket; tcp.data = this */
    uv_shutdown_t shut;      /* write-side shutdown while lingering */
    ss_conn_set *set;        /* owning set */
    int refs;                /* socket + requests + writes + dirty list */
    bool closing;            /* uv_close called */
    bool close_pending;      /* close once output is written */
    bool lingering;          /* shut down, discarding input until EOF */
    bool eof;                /* peer finished sending */
    bool reading;            /* uv_read_start active */
    bool processing;         /* inside conn_process (no recursion) */
    bool authed;             /* Hello succeeded */
    bool rejected;           /* over --max-connections; not counted */
    bool dirty;              /* on the set's dirty list */
    bool resume;             /* dirty: re-process buffered frames */
    const char *close_soon;  /* dirty: close in the flush step (reason) */
    ss_conn *later_next;     /* set's later list (closed_again) */
    bool fresh;              /* no complete request yet (fresh list) */
    uint8_t *rbuf;           /* read buffer */
    size_t rlen;             /* bytes in rbuf */
    size_t rcap;             /* rbuf capacity */
    out_chunk *out_head;     /* frames not yet handed to the kernel */
    out_chunk *out_tail;     /* last queued frame */
    uint64_t out_bytes;      /* queued + in-flight output bytes */
    unsigned writes;         /* uv_write requests in flight */
    unsigned inflight;       /* unanswered requests */
    unsigned by_class[SS_CONN_CLASSES]; /* unanswered requests per class */
    uint64_t last_active;    /* uv_now of the last whole request or answer */
    uint64_t frame_start;    /* uv_now when the incomplete frame began, or 0 */
    uint64_t linger_start;   /* uv_now when lingering began */
    void *data;              /* the layer above's (ss_conn_set_data) */
    ss_conn *prev;           /* set list */
    ss_conn *next;           /* set list */
    ss_conn *fresh_prev;     /* fresh list (newer) */
    ss_conn *fresh_next;     /* fresh list (older) */
    ss_conn *dirty_next;     /* set dirty list */
    char peer[64];           /* peer address for logs */
};

/* conn.c */
bool conn_has_frame(const ss_conn *c);       /* a whole frame is buffered */
void conn_update_reading(ss_conn *c);        /* start/stop reading as due */
void conn_output_progress(ss_conn *c);       /* resume after output or caps */
void conn_flush(ss_conn *c);                 /* write queued output now */
/* conn_set.c */
void conn_mark_dirty(ss_conn *c);            /* flush c in the flush step */
void conn_close_event_later(ss_conn *c);     /* re-run `closed` later */

#endif
