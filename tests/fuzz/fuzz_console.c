/*
 * The admin console: raw session bytes through the real console
 * (admin/console.c, commands.c: framing, authentication, the command
 * table, modules' commands, questions to workers), before and after
 * authentication. The first byte of the input picks the way in, the rest
 * is what the client types:
 *   0: the Unix socket: the peer credential check lets this process in at
 *      the admin level;
 *   1: TCP, unauthenticated: the 401 challenge, then the bytes as they are
 *      (an "auth" line among them fails);
 *   2: TCP, authenticated as the operator: the harness answers the
 *      challenge with the HMAC of the operator secret first;
 *   3: TCP, authenticated as admin with the admin secret.
 * Each input starts the console afresh on the supervisor's loop
 * (admin_console_start, the module's sup_init, with the configuration's
 * listeners: a Unix socket and a loopback TCP port) and stops it at the end
 * (admin_console_stop), so no session outlives its input. A worker (id 1)
 * runs beside it, so conns/kill/listener questions reach the real worker
 * side and come back.
 *
 * The supervisor itself is a stand-in (below): the console's calls that
 * would change the process (scaling, draining, reloading, stopping,
 * reopening logs) answer as the supervisor would but do nothing. They are
 * the supervisor's code, not the console's, and would start threads or
 * stop the fuzzer.
 */
#include "harness.h"

#include "admin/admin.h"
#include "admin/console_impl.h"
#include "core/log.h"
#include "core/supervisor.h"
#include "core/worker.h"
#include "protocols/chat/chat.h"
#include "protocols/http/http.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- the stand-in supervisor ---- */
struct supervisor {
    struct event_base *base;
    struct config *cfg;
    const char *path;
};
static struct supervisor sup;

struct event_base *sup_base(struct supervisor *s)
{
    return s->base;
}
const struct config *sup_config(struct supervisor *s)
{
    return s->cfg;
}
const char *sup_config_path(struct supervisor *s)
{
    return s->path;
}
void *sup_module_state(struct supervisor *s, const struct module *m)
{
    (void)s;
    return fz_sup_state(m); /* the chat room's, the console's */
}
int sup_workers(struct supervisor *s, struct sup_worker_view *out, int max)
{
    (void)s;
    if (max < 1)
        return 0;
    out[0] = (struct sup_worker_view){1, "running"};
    return 1;
}
int sup_reload(struct supervisor *s, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    return 0;
}
void sup_stop(struct supervisor *s, unsigned grace_ms)
{
    (void)s;
    (void)grace_ms;
}
int sup_reopen_logs(struct supervisor *s)
{
    (void)s;
    return 0;
}
static const uint16_t held[BUS_MAX_WORKERS + 1] = {0, 1};
void sup_each_listener(struct supervisor *s,
                       void (*fn)(void *arg, const struct sup_listener_view *l), void *arg)
{
    (void)s;
    struct sup_listener_view v = {1, "web", "127.0.0.1:8080", 1, 1, held};
    fn(arg, &v);
}
int sup_listener_enable(struct supervisor *s, const char *which, int enable)
{
    (void)s;
    (void)enable;
    return strcmp(which, "web") == 0 || strcmp(which, "127.0.0.1:8080") == 0;
}
int sup_scale(struct supervisor *s, int n, char *msg, size_t len)
{
    (void)s;
    if (n < 1 || n > BUS_MAX_WORKERS) {
        snprintf(msg, len, "workers: 1 to %d", BUS_MAX_WORKERS);
        return -1;
    }
    snprintf(msg, len, "workers: 1 -> %d", n);
    return 0;
}
int sup_drain(struct supervisor *s, int id, int restart, char *msg, size_t len)
{
    (void)s;
    if (id != 1) {
        snprintf(msg, len, "no worker %d", id);
        return -1;
    }
    snprintf(msg, len, "worker 1 %s", restart ? "restarts" : "drains");
    return 0;
}

/* ---- the target ---- */
static struct worker *w;
static char sock_path[108];
static int tcp_port;
static int baseline; /* events on the supervisor's loop without the console */
static const char admin_secret[] = "admin-secret-for-fuzzing",
                  operator_secret[] = "operator-secret-for-fuzzing";

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_mkdir("run");
    fz_write("admin.secret", "admin-secret-for-fuzzing\n");
    fz_write("operator.secret", "operator-secret-for-fuzzing\n");
    chmod(fz_path(0, "admin.secret"), 0600);
    chmod(fz_path(0, "operator.secret"), 0600);
    int lfd = fz_tcp_listener(&tcp_port); /* a free port for the console */
    close(lfd);
    snprintf(sock_path, sizeof sock_path, "%s", fz_path(0, "run/admin.sock"));
    char conf[1024];
    snprintf(
        conf, sizeof conf,
        "workers = 1;\n"
        "chat = ( { name = \"chat\"; listen = [ \"127.0.0.1:1\" ]; } );\n"
        "http = ( { name = \"web\"; listen = [ \"127.0.0.1:2\" ]; vhosts = ( { names = [ \"*\" ];\n"
        "  handlers = ( { type = \"status\"; path = \"/\"; } ); } ); } );\n"
        "admin = { listen = [ \"unix:run/admin.sock\", \"127.0.0.1:%d\" ];\n"
        "  secret = \"admin.secret\"; operator_secret = \"operator.secret\";\n"
        "  max_sessions = 4; };\n",
        tcp_port);
    sup.cfg = fz_config("medusa.conf", conf);
    sup.path = strdup(fz_path(0, "medusa.conf"));
    if (!(sup.base = event_base_new()))
        abort();
    w = fz_worker(sup.cfg);
    /* the other modules' supervisor sides, for their console commands
     * ("chat who", "upstream disable ...") */
    fz_sup_start(&chat_module, &sup, sup.cfg);
    fz_sup_start(&http_module, &sup, sup.cfg);
    baseline = event_base_get_num_events(sup.base, EVENT_BASE_COUNT_ADDED);
    fz_also_run(w->base);
    return 0;
}

struct auth {
    const char *secret; /* NULL: no answer */
    int answered;
    int bad_frame;
    size_t framed; /* output checked so far: whole frames */
};

/* Every reply is "STATUS LENGTH\n" and LENGTH bytes (DESIGN.md, the admin
 * protocol): checks the frames that have come whole. */
static void check_frames(struct auth *a, const char *out, size_t len)
{
    while (!a->bad_frame && a->framed < len) {
        const char *p = out + a->framed, *nl = memchr(p, '\n', len - a->framed);
        if (!nl)
            return;
        unsigned status;
        size_t body;
        char head[32];
        int n = -1;
        snprintf(head, sizeof head, "%.*s", (int)(nl - p < 31 ? nl - p : 31), p);
        if (nl - p > 24 || sscanf(head, "%3u %zu%n", &status, &body, &n) != 2 || n != nl - p ||
            (status != 200 && status != 400 && status != 401 && status != 500)) {
            a->bad_frame = 1;
            return;
        }
        if ((size_t)(nl + 1 - out) + body > len)
            return; /* the body is still coming */
        a->framed = (size_t)(nl + 1 - out) + body;
    }
}

/* The challenge is the body of the first reply, "401 64\n<hex>". */
static void on_output(struct fz_client *cl, const char *out, size_t len, void *arg)
{
    struct auth *a = arg;
    if (len < FZ_OUT_MAX)
        check_frames(a, out, len);
    if (!a->secret || a->answered)
        return;
    const char *nl = memchr(out, '\n', len);
    if (!nl || strncmp(out, "401 64\n", 7) != 0 || (size_t)(nl + 1 - out) + 64 > len)
        return;
    unsigned char mac[32];
    unsigned maclen = sizeof mac;
    HMAC(EVP_sha256(), a->secret, (int)strlen(a->secret), (const unsigned char *)nl + 1, 64, mac,
         &maclen);
    char line[6 + 64 + 2] = "auth ";
    for (unsigned i = 0; i < maclen; i++)
        snprintf(line + 5 + 2 * i, 3, "%02x", mac[i]);
    strcat(line, "\n");
    fz_send(cl, line, strlen(line));
    a->answered = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return -1;
    int mode = data[0] % 4;
    log_set_level(MLOG_INFO); /* "log level" in an earlier input */
    char err[256];
    void *console;
    if (admin_module.sup_init(&sup, sup.cfg, &console, err, sizeof err) < 0) {
        fprintf(stderr, "console: %s\n", err);
        abort();
    }
    fz_sup_set_state(&admin_module, console);
    int fd;
    if (mode == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || fz_connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            abort();
    } else {
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)tcp_port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || fz_connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            abort();
    }
    struct auth a = {.secret = mode == 2 ? operator_secret : mode == 3 ? admin_secret : NULL};
    fz_client_session(sup.base, fd, data + 1, size - 1, on_output, &a, NULL);
    admin_module.sup_dispose(console);
    fz_sup_set_state(&admin_module, NULL);
    /* what the workers still answer goes nowhere */
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    fz_sup_pump();
    event_base_loop(sup.base, EVLOOP_NONBLOCK);
    /* A stopped console leaves nothing on the loop: a timer left behind
     * (a question to workers nobody waits for) would fire on freed memory. */
    int left = event_base_get_num_events(sup.base, EVENT_BASE_COUNT_ADDED) - baseline;
    if (left) {
        fprintf(stderr, "%d event(s) left on the supervisor's loop by a stopped console\n", left);
        abort();
    }
    if (a.bad_frame) {
        fprintf(stderr, "a reply breaks the STATUS LENGTH framing at byte %zu\n", a.framed);
        abort();
    }
    return 0;
}
