/* main -- statesaver-server entry point: flags, start, run, exit status. */
#include <signal.h>
#include <stdio.h>

#include "config.h"
#include "server.h"
#include "ss_error.h"
#include "ss_log.h"

int main(int argc, char **argv)
{
    ss_config cfg;
    ss_server *srv = NULL;
    int status = 1;
    ss_config_init(&cfg);
    ss_log_set_component("server");
    int rc = ss_config_parse(&cfg, argc, argv, stdout, stderr);
    if (rc == 1) {
        status = 0;
        goto out;
    }
    if (rc < 0) {
        status = 2;
        goto out;
    }
    /* A peer that vanishes must cost a write error, not the process. */
    signal(SIGPIPE, SIG_IGN);
    rc = ss_server_create(&srv, &cfg);
    if (rc < 0) {
        fprintf(stderr, "statesaver-server: cannot start: %s\n",
                ss_strerror(rc));
        goto out;
    }
    rc = ss_server_run(srv);
    status = rc < 0 ? 1 : 0;
out:
    ss_server_free(srv);
    ss_config_clear(&cfg);
    return status;
}
