/* ss_testserver -- start and stop the real statesaver-server for client tests. */
#include "ss_testserver.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long to wait for the port file / for a graceful exit (ms). */
#define TESTSERVER_START_MS 20000
#define TESTSERVER_STOP_MS 10000

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Most extra arguments start_on passes on. */
#define TESTSERVER_EXTRA_MAX 8

static int start_on(ss_testserver *s, const char *token, bool v6, const char *fixed_listen,
                    const char *const *extra)
{
    const char *listen = fixed_listen ? fixed_listen : v6 ? "[::1]:0" : "127.0.0.1:0";
    const char *root = getenv("SS_BUILD_ROOT");
    const char *tmp = getenv("TMPDIR");
    char bin[1024], data[512], portfile[512], tokfile[512];

    memset(s, 0, sizeof *s);
    if (!root) {
        fprintf(stderr, "SS_BUILD_ROOT is not set\n");
        return -1;
    }
    snprintf(bin, sizeof bin, "%s/server/statesaver-server", root);
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "%s: %s\n", bin, strerror(errno));
        return -1;
    }
    snprintf(s->dir, sizeof s->dir, "%s/ss-client-test-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(s->dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(data, sizeof data, "%s/data", s->dir);
    snprintf(portfile, sizeof portfile, "%s/port", s->dir);
    snprintf(tokfile, sizeof tokfile, "%s/token", s->dir);
    if (token) {
        FILE *fp = fopen(tokfile, "w");
        if (!fp || fprintf(fp, "%s\n", token) < 0 || fclose(fp) != 0) {
            fprintf(stderr, "%s: cannot write\n", tokfile);
            return -1;
        }
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        const char *av[16 + TESTSERVER_EXTRA_MAX];
        size_t n = 0;
        av[n++] = bin;
        av[n++] = "--listen";
        av[n++] = listen;
        av[n++] = "--data";
        av[n++] = data;
        av[n++] = "--port-file";
        av[n++] = portfile;
        av[n++] = "--sync";
        av[n++] = "off";
        if (token) {
            av[n++] = "--auth-token-file";
            av[n++] = tokfile;
        }
        for (size_t i = 0; extra && extra[i] && i < TESTSERVER_EXTRA_MAX; i++)
            av[n++] = extra[i];
        av[n] = NULL;
        execv(bin, (char *const *)(uintptr_t)av);
        _exit(127);
    }
    s->pid = pid;
    for (int waited = 0; waited < TESTSERVER_START_MS; waited += 20) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "statesaver-server exited early (status %d)\n", st);
            s->pid = 0;
            return -1;
        }
        FILE *fp = fopen(portfile, "r");
        if (fp) {
            int port = 0;
            int ok = fscanf(fp, "%d", &port);
            fclose(fp);
            if (ok == 1 && port > 0) {
                s->port = port;
                snprintf(s->addr, sizeof s->addr, v6 ? "[::1]:%d" : "127.0.0.1:%d", port);
                return 0;
            }
        }
        sleep_ms(20);
    }
    fprintf(stderr, "statesaver-server wrote no port file in %d ms\n", TESTSERVER_START_MS);
    ss_testserver_stop(s);
    return -1;
}

int ss_testserver_start(ss_testserver *s, const char *token)
{
    return start_on(s, token, false, NULL, NULL);
}

int ss_testserver_start_v6(ss_testserver *s, const char *token)
{
    return start_on(s, token, true, NULL, NULL);
}

int ss_testserver_start_shard(ss_testserver *s, const char *listen, const char *config,
                              const char *shard)
{
    const char *extra[] = {"--cluster-config", config, "--shard", shard, NULL};
    return start_on(s, NULL, false, listen, extra);
}

void ss_testserver_stop(ss_testserver *s)
{
    if (s->pid > 0) {
        int st;
        kill(s->pid, SIGTERM);
        int waited = 0;
        while (waitpid(s->pid, &st, WNOHANG) == 0) {
            if (waited >= TESTSERVER_STOP_MS) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, &st, 0);
                break;
            }
            sleep_ms(10);
            waited += 10;
        }
        s->pid = 0;
    }
    if (s->dir[0]) {
        nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        s->dir[0] = '\0';
    }
}
