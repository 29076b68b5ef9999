/* jobs_fixture -- the Check fixture of the job-API test programs
 * (test_jobs_client.c, test_jobs_ids.c, test_jobs_cancel.c): a real
 * statesaver-server (tests/client/ss_testserver) and one connection to it.
 *
 * Use: tcase_add_unchecked_fixture(tc, jobs_fx_start_srv, jobs_fx_stop_srv)
 * and tcase_add_checked_fixture(tc, jobs_fx_open_client,
 * jobs_fx_close_client); the tests then use srv and c. Both are owned here:
 * srv lives from start to stop, c from open to close (closed and NULL
 * after). */
#ifndef SS_JOBS_FIXTURE_H
#define SS_JOBS_FIXTURE_H

#include "ss_testserver.h"
#include "statesaver.h"

/* Per-call timeout of the test connection (ms). */
#define TEST_TIMEOUT_MS 10000

extern ss_testserver srv; /* the server of the test case */
extern ss_client *c;      /* the test's connection */

void jobs_fx_start_srv(void);
void jobs_fx_stop_srv(void);
void jobs_fx_open_client(void);
void jobs_fx_close_client(void);

#endif
