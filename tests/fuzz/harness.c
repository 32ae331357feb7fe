/* The fuzz targets' shared set-up and client; see harness.h. */
#include "harness.h"

#include "admin/admin.h"
#include "core/bus.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/worker.h"
#include "protocols/chat/chat.h"
#include "protocols/echo/echo.h"
#include "protocols/ftp/ftp.h"
#include "protocols/http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* As core/main.c's list. */
static const struct module *const modules[] = {
    &http_module, &ftp_module, &chat_module, &echo_module, &admin_module, NULL,
};

static char dir[PATH_MAX];
static void *sup_state[16];
static struct event_base *also;

#define DIE(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "fuzz harness: " __VA_ARGS__);                                             \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

static int rm_below(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0)
        remove(path);
    return 0;
}

static void empty_dir(const char *path)
{
    nftw(path, rm_below, 16, FTW_DEPTH | FTW_PHYS);
}

void fz_empty(const char *rel)
{
    empty_dir(fz_path(3, rel));
}

static void remove_dir(void)
{
    if (dir[0]) {
        empty_dir(dir);
        rmdir(dir);
    }
}

const char *fz_init(void)
{
    if (dir[0])
        return dir;
    log_init();
    if (!getenv("MEDUSA_FUZZ_LOG") && log_open("/dev/null") < 0)
        DIE("cannot log to /dev/null");
    log_set_level(MLOG_INFO);
    modules_register(modules);
    if (tls_global_init() < 0)
        DIE("tls_global_init");
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/medusa-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        DIE("mkdtemp %s: %s", dir, strerror(errno));
    /* the real path: confinement checks compare against it */
    char real[PATH_MAX];
    if (!realpath(dir, real))
        DIE("realpath %s: %s", dir, strerror(errno));
    snprintf(dir, sizeof dir, "%s", real);
    atexit(remove_dir);
    return dir;
}

const char *fz_path(int slot, const char *rel)
{
    static char buf[4][PATH_MAX];
    snprintf(buf[slot & 3], sizeof buf[0], "%s/%s", dir, rel);
    return buf[slot & 3];
}

void fz_mkdir(const char *rel)
{
    if (mkdir(fz_path(0, rel), 0755) < 0 && errno != EEXIST)
        DIE("mkdir %s: %s", rel, strerror(errno));
}

void fz_write(const char *rel, const char *text)
{
    FILE *f = fopen(fz_path(0, rel), "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        DIE("write %s: %s", rel, strerror(errno));
}

void fz_symlink(const char *target, const char *rel)
{
    if (symlink(target, fz_path(0, rel)) < 0 && errno != EEXIST)
        DIE("symlink %s: %s", rel, strerror(errno));
}

struct config *fz_config(const char *rel, const char *text)
{
    fz_write(rel, text);
    char err[CONFIG_ERR_MAX];
    struct config *c = config_load(fz_path(1, rel), err, sizeof err);
    if (!c)
        DIE("configuration: %s", err);
    return c;
}

struct worker *fz_worker(struct config *cfg)
{
    if (bus_register(BUS_SUPERVISOR) < 0)
        DIE("bus_register");
    bus_set_live(BUS_SUPERVISOR, 1);
    struct worker *w = worker_new(1, cfg);
    if (!w)
        DIE("worker_new");
    bus_set_live(1, 1);
    if (worker_attach(w) < 0)
        DIE("worker_attach");
    return w;
}

void fz_sup_start(const struct module *m, struct supervisor *s, struct config *cfg)
{
    unsigned id = module_id(m);
    char err[256];
    if (!id || id >= sizeof sup_state / sizeof *sup_state || !m->sup_init ||
        m->sup_init(s, cfg, &sup_state[id], err, sizeof err) < 0)
        DIE("sup_init of %s", m->name);
}

/* As the supervisor's dispatch does with a module's message. */
static void sup_dispatch(struct msg *m, void *arg)
{
    (void)arg;
    const struct module *mod = m->module ? module_at(m->module) : NULL;
    if (mod && mod->sup_message && sup_state[m->module])
        mod->sup_message(sup_state[m->module], m);
    else
        msg_release(m);
}

void *fz_sup_state(const struct module *m)
{
    return sup_state[module_id(m)];
}

void fz_sup_set_state(const struct module *m, void *state)
{
    sup_state[module_id(m)] = state;
}

void fz_also_run(struct event_base *base)
{
    also = base;
}

void fz_sup_pump(void)
{
    bus_reclaim(BUS_SUPERVISOR, sup_dispatch, NULL);
}

/* ---- the client ---- */

void fz_send(struct fz_client *cl, const void *data, size_t len)
{
    if (!len)
        return;
    if (cl->qlen + len > cl->qcap) {
        size_t cap = cl->qcap ? cl->qcap : 4096;
        while (cap < cl->qlen + len)
            cap *= 2;
        if (!(cl->q = realloc(cl->q, cap)))
            DIE("out of memory");
        cl->qcap = cap;
    }
    memcpy(cl->q + cl->qlen, data, len);
    cl->qlen += len;
}

/* One round of client I/O; returns nonzero if anything moved. */
static int client_io(struct fz_client *cl)
{
    int moved = 0;
    if (cl->fd < 0)
        return 0;
    while (cl->qoff < cl->qlen) {
        ssize_t n = send(cl->fd, cl->q + cl->qoff, cl->qlen - cl->qoff, MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                cl->qoff = cl->qlen; /* the server closed: drop the rest */
            break;
        }
        cl->qoff += (size_t)n;
        moved = 1;
    }
    for (;;) {
        char buf[16384];
        ssize_t n = recv(cl->fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        moved = 1;
        size_t keep = cl->outlen + (size_t)n > FZ_OUT_MAX ? FZ_OUT_MAX - cl->outlen : (size_t)n;
        if (keep) {
            if (cl->outlen + keep > cl->outcap) {
                size_t cap = cl->outcap ? cl->outcap : 4096;
                while (cap < cl->outlen + keep)
                    cap *= 2;
                if (!(cl->out = realloc(cl->out, cap)))
                    DIE("out of memory");
                cl->outcap = cap;
            }
            memcpy(cl->out + cl->outlen, buf, keep);
            cl->outlen += keep;
        }
    }
    if (cl->on_output && cl->outlen > cl->seen) {
        cl->seen = cl->outlen;
        cl->on_output(cl, cl->out, cl->outlen, cl->arg);
    }
    return moved;
}

/* Bytes the server has not read yet (a Unix socket's send queue is what
 * its peer has not read; TCP on loopback hands them over at once). */
static int unread(int fd)
{
    int n = 0;
    if (fd < 0 || ioctl(fd, SIOCOUTQ, &n) < 0)
        return 0;
    return n;
}

#define QUIET_PASSES 3
#define MAX_PASSES 100000

void fz_run(struct fz_client *cl)
{
    int quiet = 0;
    for (int pass = 0; pass < MAX_PASSES && quiet < QUIET_PASSES; pass++) {
        event_base_loop(cl->base, EVLOOP_NONBLOCK);
        fz_sup_pump();
        int active = 0;
        if (also && also != cl->base) {
            event_base_loop(also, EVLOOP_NONBLOCK);
            fz_sup_pump();
            active = event_base_get_num_events(also, EVENT_BASE_COUNT_ACTIVE);
        }
        int moved = client_io(cl);
        if (cl->poll)
            moved |= cl->poll(cl, cl->arg);
        active += event_base_get_num_events(cl->base, EVENT_BASE_COUNT_ACTIVE);
        if (getenv("MEDUSA_FUZZ_TRACE"))
            fprintf(stderr, "pass %d: moved %d active %d unread %d out %zu\n", pass, moved, active,
                    unread(cl->fd), cl->outlen);
        if (moved || active || unread(cl->fd))
            quiet = 0;
        else
            quiet++;
    }
}

static void client_end(struct fz_client *cl)
{
    /* half-close first, as clients that are done sending do */
    shutdown(cl->fd, SHUT_WR);
    fz_run(cl);
    close(cl->fd);
    cl->fd = -1;
    fz_run(cl);
    if (getenv("MEDUSA_FUZZ_SHOW")) /* what the server said, to check the harness */
        fprintf(stderr, "---- %zu bytes from the server ----\n%.*s\n----\n", cl->outlen,
                (int)cl->outlen, cl->out ? cl->out : "");
    free(cl->q);
    free(cl->out);
}

int fz_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EINTR && errno != EAGAIN)
        return -1;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int rc, err = 0;
    socklen_t el = sizeof err;
    while ((rc = poll(&p, 1, 5000)) < 0 && errno == EINTR)
        ;
    if (rc <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
        errno = rc == 0 ? ETIMEDOUT : err ? err : errno;
        return -1;
    }
    return 0;
}

int fz_tcp_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        DIE("loopback listener: %s", strerror(errno));
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A loopback TCP connection: *client (from `from`) and *server, both
 * non-blocking. */
static void tcp_pair(const char *from, int *client, int *server, char *peer, size_t peerlen)
{
    static int lfd = -1, lport;
    if (lfd < 0)
        lfd = fz_tcp_listener(&lport);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, from ? from : "127.0.0.1", &src.sin_addr);
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons((uint16_t)lport)};
    if (c < 0 || bind(c, (struct sockaddr *)&src, sizeof src) < 0 ||
        fz_connect(c, (struct sockaddr *)&dst, sizeof dst) < 0)
        DIE("loopback connect: %s", strerror(errno));
    struct sockaddr_in pa;
    socklen_t pl;
    int s;
    do { /* (libFuzzer's timers interrupt blocking calls) */
        pl = sizeof pa;
        s = accept4(lfd, (struct sockaddr *)&pa, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (s < 0 && errno == EINTR);
    if (s < 0)
        DIE("loopback accept: %s", strerror(errno));
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &pa.sin_addr, host, sizeof host);
    snprintf(peer, peerlen, "%s:%u", host, ntohs(pa.sin_port));
    *client = c;
    *server = s;
}

void fz_session(struct worker *w, const char *service, int tcp, const char *from,
                const uint8_t *data, size_t size, fz_output_fn *on_output,
                int (*poll)(struct fz_client *, void *), void *arg)
{
    int sv[2];
    char peer[64] = "127.0.0.1:40000";
    if (tcp) {
        tcp_pair(from, &sv[0], &sv[1], peer, sizeof peer);
    } else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        DIE("socketpair: %s", strerror(errno));
    }
    struct fz_client cl = {
        .base = w->base, .fd = sv[0], .on_output = on_output, .arg = arg, .poll = poll};
    if (worker_accept_fd(w, service, sv[1], peer) < 0)
        DIE("no service %s", service);
    fz_run(&cl); /* a greeting first, as a client would wait for it */
    fz_send(&cl, data, size);
    fz_run(&cl);
    client_end(&cl);
    worker_close_conns(w);
    /* what the closing sent (a chat user's leave, and the room's answer)
     * is delivered now, not in the next input */
    for (int i = 0; i < QUIET_PASSES; i++) {
        event_base_loop(w->base, EVLOOP_NONBLOCK);
        fz_sup_pump();
    }
    if (w->nconns)
        DIE("%zu connection(s) left after the session", w->nconns);
}

void fz_client_session(struct event_base *base, int fd, const uint8_t *data, size_t size,
                       fz_output_fn *on_output, void *arg, void (*after_close)(void *arg))
{
    struct fz_client cl = {.base = base, .fd = fd, .on_output = on_output, .arg = arg};
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fz_run(&cl);
    fz_send(&cl, data, size);
    fz_run(&cl);
    client_end(&cl);
    if (after_close)
        after_close(arg);
}
