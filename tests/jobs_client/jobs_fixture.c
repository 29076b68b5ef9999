/* jobs_fixture -- the shared Check fixture of the job-API tests (see
 * jobs_fixture.h). */
#include "jobs_fixture.h"

#include <check.h>

ss_testserver srv;
ss_client *c;

void jobs_fx_start_srv(void)
{
    ck_assert_msg(ss_testserver_start(&srv, NULL) == 0, "server did not start");
}

void jobs_fx_stop_srv(void)
{
    ss_testserver_stop(&srv);
}

void jobs_fx_open_client(void)
{
    ck_assert_int_eq(ss_client_connect(&c, srv.addr, TEST_TIMEOUT_MS), 0);
}

void jobs_fx_close_client(void)
{
    ss_client_close(c);
    c = NULL;
}
