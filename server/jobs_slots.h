/* jobs_slots -- the job queue's side of slot moves: the in-memory index
 * learns imported job records and forgets deleted ones, and the jobs of
 * frozen slots are kept from Lease (docs/cluster.md).
 *
 * The jobs of a sequence whose slot is frozen, or owned by another shard
 * (imported before the flip, or moved away and not deleted yet), are marked
 * held (the queue's own "not ready" flag, without the hold timer), so
 * Lease skips them; a segment leased before the freeze keeps its lease,
 * and its Complete is refused (UNAVAILABLE) by the ownership check.
 *
 * Threads: loop thread only.
 */
#ifndef SS_JOBS_SLOTS_H
#define SS_JOBS_SLOTS_H

#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "jobs.h"
#include "jobs_store.h"

/* The jobs database handle. */
MDB_dbi ss_jobs_slots_dbi(const ss_jobs *j);
/* Is this record's segment (saver, key, segment) in the index already? */
bool ss_jobs_slots_has(ss_jobs *j, const ss_job_rec *rec);
/* A fresh record id for an imported record. */
uint64_t ss_jobs_slots_new_id(ss_jobs *j);
/* After the import committed: index record id (decoded rec); serves
 * parked leases if it is ready. held: keep it from Lease (its slot is
 * frozen). 0 or SS_ERR_NOMEM. */
int ss_jobs_slots_adopt(ss_jobs *j, uint64_t id, const ss_job_rec *rec, bool held);

/* Set every job's hold from held(arg, key, len): true keeps the sequence's
 * jobs from Lease (its slot is frozen or owned by another shard). */
typedef bool (*ss_jobs_slots_pred)(void *arg, const uint8_t *key, size_t len);
void ss_jobs_slots_hold(ss_jobs *j, ss_jobs_slots_pred held, void *arg);

/* May the record of this segment be deleted now? false while it is
 * leased or an op is changing it (it is held so it is not leased again). */
bool ss_jobs_slots_can_forget(ss_jobs *j, const ss_job_rec *rec);
/* Its record was deleted: parked Awaits get UNAVAILABLE (the key moved),
 * and the job leaves the index. */
void ss_jobs_slots_forget(ss_jobs *j, const ss_job_rec *rec);

#endif
