/*
 * medusad: the command line (shared DESIGN.md §3) and the list of modules
 * this build serves. It is the one file of core/ that names modules: a new
 * protocol is its folder under protocols/ (the build finds it, and
 * protocols.h declares it) plus its line in `modules` below.
 * Everything else is the supervisor's.
 */
#include "admin/admin.h"
#include "core/config.h"
#include "core/log.h"
#include "core/module.h"
#include "core/supervisor.h"
#include "core/tls.h"
#include "protocols.h"
#include "version.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef MEDUSA_DEFAULT_CONFIG
#define MEDUSA_DEFAULT_CONFIG "/etc/medusa/medusa.conf"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: medusad [-c FILE] [-w N] [-t] [-V] [-h]\n"
            "  -c, --config FILE  configuration file (default " MEDUSA_DEFAULT_CONFIG ")\n"
            "  -w, --workers N    number of worker threads, overriding 'workers'\n"
            "  -t, --test         check the configuration and exit (0 valid, 1 with FILE:LINE: "
            "message)\n"
            "  -V, --version      print the version and exit\n"
            "  -h, --help         this help\n"
            "signals: TERM/INT graceful stop, HUP reload, USR1 reopen logs, USR2 log statistics\n");
}

/* Services first, in the order their configuration lists are parsed; the
 * console last, since its section is checked against them. */
static const struct module *const modules[] = {
    &http_module, &ftp_module, &chat_module, &echo_module, &admin_module, NULL,
};

/* -t: can every TCP listen address be bound? SO_REUSEPORT as the server
 * binds, so the running server's own sockets (the reload's check) do not
 * count as in use; another program's do, and so does an address this host
 * does not have. The line is found by the address's text. */
static int check_binds(const struct config *c)
{
    int bad = 0;
    for (size_t i = 0; i < c->nservices; i++)
        for (size_t k = 0; k < c->services[i].nlisten; k++) {
            const struct listen_addr *a = &c->services[i].listen[k];
            if (a->family == AF_UNIX)
                continue;
            int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
            if (fd < 0)
                continue;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
            if (a->family == AF_INET6) /* as the listeners bind */
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
            if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
                int e = errno, line = 0;
                const char *at = c->text ? strstr(c->text, a->text) : NULL;
                for (const char *p = c->text; at && p <= at; p++)
                    line += p == c->text || p[-1] == '\n';
                /* In use or not permitted may be this very server, running
                 * as another user (SO_REUSEPORT shares only within one user):
                 * said, not fatal. An address this host lacks is fatal. */
                int fatal = e != EADDRINUSE && e != EACCES;
                fprintf(stderr, "%s:%d: %slisten %s: cannot bind: %s%s\n", c->path, line,
                        fatal ? "" : "warning: ", a->text, strerror(e),
                        e == EADDRINUSE
                            ? " (another program, or this server running as another user)"
                        : e == EADDRNOTAVAIL ? " (not an address of this host)"
                        : e == EACCES ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                                      : "");
                bad |= fatal;
            }
            close(fd);
        }
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *config = MEDUSA_DEFAULT_CONFIG;
    int test = 0, workers = 0, opt;
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"workers", required_argument, NULL, 'w'},
        {"test", no_argument, NULL, 't'},         {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    while ((opt = getopt_long(argc, argv, "c:w:tVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config = optarg;
            break;
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*optarg == 0 || *end || n < 1 || n > 256) {
                fprintf(stderr, "medusad: -w takes a worker count from 1 to 256\n");
                return 2;
            }
            workers = (int)n;
            break;
        }
        case 't':
            test = 1;
            break;
        case 'V':
            printf("medusad %s\n", MEDUSA_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    log_init();
    modules_register(modules);
    if (tls_global_init() < 0)
        return 1;
    if (test) {
        char err[CONFIG_ERR_MAX];
        struct config *c = config_load(config, err, sizeof err);
        if (!c) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        if (check_binds(c) < 0) {
            config_unref(c);
            return 1;
        }
        printf("%s: configuration ok (%zu service%s, %d worker%s)\n", config, c->nservices,
               c->nservices == 1 ? "" : "s", workers ? workers : c->workers,
               (workers ? workers : c->workers) == 1 ? "" : "s");
        config_unref(c);
        return 0;
    }
    return supervisor_run(config, workers);
}
