/* recovery -- startup of the write-ahead log: open DATA/wal, refuse a
 * store that came back older than the log says it was, replay every record
 * after the store's applied LSN into LMDB, checkpoint.
 *
 * Runs on the starting thread before the writer starts (docs/wal.md).
 */
#ifndef SS_RECOVERY_H
#define SS_RECOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"
#include "wal.h"

/* Replay commits its LMDB transaction after about this many bytes of log
 * (bounds the transaction's dirty pages). Fixed. */
#define SS_RECOVERY_TXN_BYTES (64u << 20)

/* Databases of other modules in the store's environment that log records
 * may write; created (if missing) before replay. */
#define SS_RECOVERY_MODULE_DBS {"jobs"}

typedef struct ss_recovery {
    ss_wal *wal;             /* the open log (caller owns; hand to the
                                writer), NULL when !keep */
    uint64_t applied_lsn;    /* store's applied LSN after replay */
    uint64_t records;        /* records replayed */
    uint64_t bytes;          /* bytes replayed */
    double seconds;          /* time of the replay */
} ss_recovery;

/* *st is the open store (opened from so without sync when the log is on);
 * it is closed and reopened after a replay that changed it (schema cache,
 * generations), so *st may change (NULL after a failure: closed).
 * wo->dir is ignored: the log lives in so->dir/wal. keep false (--wal off):
 * an existing log is still replayed and checkpointed, then closed; with no
 * DATA/wal nothing is done. Refusals (corrupt log, missing data) return a
 * negative code with msg saying what and where. */
int ss_recovery_run(ss_store **st, const ss_store_options *so,
                   const ss_wal_options *wo, bool keep, ss_recovery *out,
                   char msg[SS_STORE_MSG]);

#endif
