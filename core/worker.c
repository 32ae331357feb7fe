/*
 * The worker thread: accept loop, inbox messages, leaving and stopping.
 *
 * Listening sockets. Every TCP listener is a separate SO_REUSEPORT socket per
 * worker, opened by the supervisor and handed over in MSG_LISTEN_ADD, so the
 * kernel spreads connections and each worker owns its socket. A Unix-domain
 * listener cannot be split that way: the supervisor opens one socket and
 * hands every worker its own dup(2) of it. Each worker polls its descriptor
 * level-triggered and races accept(2); the losers get EAGAIN. That costs a
 * wake-up per worker per connection, acceptable for local, low-rate Unix
 * traffic, and because the socket lives while the supervisor keeps its copy,
 * a worker that leaves never drops connections queued on it.
 *
 * Sockets change hands only through the supervisor, which keeps the count
 * per listener bounded (core/scaling.c): a worker closes surplus sockets
 * when the kernel migrates their queues (MSG_LISTEN_SHED), and otherwise
 * gives them back, queue and all (MSG_LISTEN_RETURN -> MSG_LISTEN_BACK).
 *
 * Limits. At worker_connections the worker turns its listeners off (new
 * connections wait in the kernel queue) and turns them on when one closes.
 * When accept fails for lack of descriptors or memory, the listeners are off
 * for 100 ms rather than spinning on a readable socket.
 *
 * Leaving (MSG_DRAIN, the server scales down). The worker's sockets go (see
 * above) and each session's module is asked to move it to a worker that
 * stays (conn_move), now or once it is between two exchanges; what cannot
 * move finishes within the grace period. The loop ends when no connection
 * is left.
 *
 * Stop (MSG_STOP, the server stops). The listeners close after accepting
 * what is already queued, every session is told how long it has, and when
 * the grace period ends what is left is closed.
 */
#include "core/worker.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/iplimit.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/module.h"
#include "core/proxyproto.h"
#include "core/throttle.h"
#include "core/tls.h"
#include "core/sbuf.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ACCEPT_BATCH 64
#define RESUME_MS 100
#define PROXY_TIMEOUT_MS 5000 /* for the PROXY header, once connected */
#define LAG_MS 250 /* event-loop lag: a timer due every LAG_MS; its lateness is the lag */

struct wlistener {
    struct list node;
    struct worker *w;
    uint32_t id;
    int fd;
    int is_unix;
    char *service;
    char *text;
    const struct service *svc; /* resolved in w->cfg; NULL if the service went away */
    int proxy;                 /* clients send a PROXY header first */
    int tls;                   /* a tls_listen address */
    struct event *ev;
    int disabled; /* by the console: not accepting, connections kept */
};

void listener_sock_free(void *p)
{
    struct listener_sock *ls = p;
    if (ls->fd >= 0)
        close(ls->fd);
    free(ls->service);
    free(ls->text);
    free(ls);
}

void *worker_module_state(struct worker *w, const struct module *m)
{
    return w->mstate[module_id(m)];
}

static struct wlistener *wlistener_of(struct list *pos)
{
    return list_entry(pos, struct wlistener, node);
}

static void listeners_enable(struct worker *w, int on)
{
    struct list *pos;
    list_for_each(pos, &w->listeners)
    {
        struct wlistener *l = wlistener_of(pos);
        if (on && !l->disabled)
            event_add(l->ev, NULL);
        else
            event_del(l->ev);
    }
}

static void pause_accept(struct worker *w, unsigned resume_ms)
{
    if (!w->accept_paused)
        listeners_enable(w, 0);
    w->accept_paused = 1;
    if (resume_ms) {
        struct timeval tv = {0, resume_ms * 1000};
        event_add(w->resume_ev, &tv);
    }
}

static void resume_accept(struct worker *w)
{
    if (!w->accept_paused || w->stopping || w->nconns >= w->cfg->worker_connections)
        return;
    w->accept_paused = 0;
    listeners_enable(w, 1);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    resume_accept(arg);
}

/* The module gets the connection. late: time has passed since it was
 * accepted (a PROXY header, a TLS handshake), so the worker may have
 * begun to stop meanwhile. */
static inline __attribute__((always_inline)) void give_to_module(struct worker *w, struct conn *c,
                                                                 int late)
{
    const struct module *m = c->svc->module;
    uint64_t id = c->id;
    c->handed = 1;
    m->accept(worker_module_state(w, m), c);
    /* A connection that came while the worker stops or leaves: the
     * module hears of that at once, as its other sessions did. (accept may
     * have closed c: look it up.) */
    if (late && w->stopping && m->drain && (c = worker_find_conn(w, id)) && !c->closing)
        m->drain(worker_module_state(w, m), c, w->cfg->grace_ms,
                 w->leaving && m->adopt && conn_movable(c));
}

void worker_conn_ready(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t id = c->id;
    give_to_module(w, c, 1);
    /* Bytes that came with the end of the handshake are already in the
     * bufferevent's input: the socket will not announce them again. */
    if ((c = worker_find_conn(w, id)) && c->bev && !c->closing &&
        evbuffer_get_length(bufferevent_get_input(c->bev)))
        bufferevent_trigger(c->bev, EV_READ, 0);
}

/* Counts one more of a repeating event: its count since the last line when
 * a line is due (at most one per LOG_EVERY_S), else 0. */
#define LOG_EVERY_S 10
static unsigned long log_due(struct log_every *e)
{
    e->n++;
    time_t now = time(NULL);
    if (now - e->at < LOG_EVERY_S)
        return 0;
    unsigned long n = e->n;
    e->at = now;
    e->n = 0;
    return n;
}

/* The service's max_conns_per_ip: the slot the connection now counts in,
 * or -1 when it was refused and closed. */
static __attribute__((noinline)) int count_per_ip(struct worker *w, const struct service *svc,
                                                  int fd, const char *peer, const char *listener,
                                                  int tls)
{
    char host[64];
    iplimit_host(peer, host, sizeof host);
    int slot = iplimit_acquire(IPLIMIT_SERVICE, svc->name, host, svc->max_conns_per_ip);
    if (slot >= 0)
        return slot;
    const char *busy = svc->module->busy_reply;
    if (busy && !tls) { /* best effort: the socket is new and empty */
        ssize_t n = send(fd, busy, strlen(busy), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            /* What the client has sent is read, so that the close is a FIN
             * behind the answer rather than a reset that may discard it. */
            char junk[4096];
            n = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
        }
        (void)n;
    }
    close(fd);
    stat_add(&w->stats->refused, 1);
    unsigned long n = log_due(&w->per_ip_refusals);
    if (n)
        log_warn(peer,
                 "refused on %s: %u connections from this address already (%s's "
                 "max_conns_per_ip); %lu refused on this worker since the last such line",
                 listener, svc->max_conns_per_ip, svc->name, n);
    return -1;
}

/* The connection goes to its module, after its TLS handshake on a TLS
 * listener. waited: it waited for a PROXY header. Inlined: the accept path
 * of every connection pays no call for it. */
static inline __attribute__((always_inline)) void
hand_over(struct worker *w, struct config *cfg, const struct service *svc, int fd, const char *peer,
          const char *listener, int is_unix, int proxied, int waited, int tls)
{
    const struct module *m = svc->module;
    int slot = -1; /* in the per-address counts (max_conns_per_ip) */
    /* (a Unix listener's peer is an address only behind a PROXY header) */
    if (svc->max_conns_per_ip && (!is_unix || proxied) &&
        (slot = count_per_ip(w, svc, fd, peer, listener, tls)) < 0) {
        if (waited) /* its wait counted as a connection, which is gone */
            worker_conn_gone(w);
        return;
    }
    if (!is_unix && (m->flags & MODULE_TCP_NODELAY)) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct conn *c = conn_new(w, cfg, svc, fd, peer, tls);
    if (!c) {
        iplimit_release(slot);
        if (waited)
            worker_conn_gone(w);
        return;
    }
    if (proxied) /* conn_new made it 0 */
        c->proxied = 1;
    c->ip_counted = slot >= 0;
    log_debug(peer, "accepted on %s (%s)%s%s", listener, svc->name, proxied ? " via PROXY" : "",
              tls ? ", TLS" : "");
    if (tls)
        conn_tls_accept(c);
    else
        give_to_module(w, c, waited);
}

/* ---- listeners with proxy_protocol: the header comes first ----
 * The header is read without reading past it (what follows is the
 * module's): bytes are peeked, and taken only once they are known to be
 * header. */
struct proxy_wait {
    struct list node;
    struct worker *w;
    int fd, is_unix, tls;
    char *listener;
    struct config *cfg;        /* the snapshot it was accepted under (a reference) */
    const struct service *svc; /* in cfg */
    struct event *ev;
    uint64_t deadline; /* monotonic ms: the whole header by then */
    size_t have;
    char peer[64];
    unsigned char hdr[PROXY_HEADER_MAX];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A wait counts as a connection (worker_connections, and a stopping
 * worker waits for it), so its end is a connection's end. */
static void proxy_wait_free(struct proxy_wait *p, int close_fd)
{
    list_remove(&p->node);
    if (p->w)
        p->w->nconns--;
    if (p->cfg)
        config_unref(p->cfg);
    if (p->ev)
        event_free(p->ev);
    if (close_fd)
        close(p->fd);
    free(p->listener);
    free(p);
}

static void proxy_refuse(struct proxy_wait *p, const char *why)
{
    struct worker *w = p->w;
    log_warn(p->peer, "%s on %s (proxy_protocol); connection closed", why, p->listener);
    stat_add(&w->stats->errors, 1);
    proxy_wait_free(p, 1);
    worker_conn_gone(w);
}

static void proxy_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proxy_wait *p = arg;
    if (what & EV_TIMEOUT) {
        proxy_refuse(p, "no PROXY header in time");
        return;
    }
    for (;;) {
        ssize_t n = recv(fd, p->hdr + p->have, sizeof p->hdr - p->have, MSG_PEEK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* A deadline, not an idle timer: a byte now and then buys no time. */
            uint64_t now = now_ms();
            if (now >= p->deadline) {
                proxy_refuse(p, "no PROXY header in time");
                return;
            }
            uint64_t left = p->deadline - now;
            struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
            event_add(p->ev, &tv);
            return;
        }
        if (n <= 0) {
            proxy_refuse(p, n == 0 ? "closed before its PROXY header" : strerror(errno));
            return;
        }
        struct sockaddr_storage src;
        socklen_t srclen = 0;
        size_t used = 0;
        const char *why = NULL;
        enum proxy_result r =
            proxy_header_parse(p->hdr, p->have + (size_t)n, &src, &srclen, &used, &why);
        if (r == PROXY_BAD) {
            proxy_refuse(p, why);
            return;
        }
        /* All peeked bytes are header (MORE), or the header ends inside them. */
        size_t take = r == PROXY_MORE ? (size_t)n : used - p->have;
        if (recv(fd, p->hdr + p->have, take, 0) != (ssize_t)take) {
            proxy_refuse(p, "cannot read its PROXY header");
            return;
        }
        p->have += take;
        if (r == PROXY_MORE) {
            if (p->have == sizeof p->hdr) {
                proxy_refuse(p, "PROXY header too long");
                return;
            }
            continue;
        }
        struct worker *w = p->w;
        char peer[64];
        if (srclen)
            sockaddr_text((struct sockaddr *)&src, srclen, peer, sizeof peer);
        else
            snprintf(peer, sizeof peer, "%s", p->peer); /* LOCAL or UNKNOWN */
        int is_unix = p->is_unix, tls = p->tls;
        char listener[LISTEN_TEXT_MAX];
        snprintf(listener, sizeof listener, "%s", p->listener);
        /* The connection keeps the snapshot it was accepted under, as one
         * from a plain listener does, even if a reload came in between. */
        struct config *cfg = config_ref(p->cfg);
        const struct service *svc = p->svc;
        proxy_wait_free(p, 0);
        hand_over(w, cfg, svc, (int)fd, peer, listener, is_unix, srclen != 0, 1, tls);
        config_unref(cfg);
        return;
    }
}

static void proxy_wait_start(struct worker *w, struct wlistener *l, int fd, const char *peer)
{
    struct proxy_wait *p = calloc(1, sizeof *p);
    struct timeval tv = {PROXY_TIMEOUT_MS / 1000, (PROXY_TIMEOUT_MS % 1000) * 1000};
    if (!p || !(p->listener = strdup(l->text)) ||
        !(p->ev = event_new(w->base, fd, EV_READ, proxy_read_cb, p)) || event_add(p->ev, &tv) < 0) {
        log_error(peer, "out of memory waiting for a PROXY header; connection closed");
        if (p) {
            list_init(&p->node);
            p->fd = fd;
            proxy_wait_free(p, 1);
        } else {
            close(fd);
        }
        return;
    }
    p->w = w;
    w->nconns++;
    p->fd = fd;
    p->is_unix = l->is_unix;
    p->tls = l->tls;
    p->cfg = config_ref(w->cfg);
    p->svc = l->svc;
    p->deadline = now_ms() + PROXY_TIMEOUT_MS;
    snprintf(p->peer, sizeof p->peer, "%s", peer);
    list_insert_head(&w->proxy_waits, &p->node);
}

static void accept_one(struct worker *w, struct wlistener *l, int fd, struct sockaddr *sa,
                       socklen_t salen)
{
    char peer[64];
    if (l->is_unix)
        snprintf(peer, sizeof peer, "%s", l->text);
    else
        sockaddr_text(sa, salen, peer, sizeof peer);
    if (!l->svc) { /* cannot happen with the supervisor's message order */
        log_error(peer, "no service '%s' for listener %s; connection closed", l->service, l->text);
        close(fd);
        return;
    }
    if (l->proxy)
        proxy_wait_start(w, l, fd, peer);
    else
        hand_over(w, w->cfg, l->svc, fd, peer, l->text, l->is_unix, 0, 0, l->tls);
}

/* Returns how many were accepted; stops at EAGAIN, at the limit, or on
 * resource exhaustion (which pauses accepting). */
static int accept_batch(struct worker *w, struct wlistener *l, int max)
{
    int n = 0;
    while (n < max) {
        if (w->nconns >= w->cfg->worker_connections) {
            pause_accept(w, 0);
            break;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Once per LOG_EVERY_S: the pauses repeat every RESUME_MS
                 * for as long as the descriptors are short. */
                unsigned long pauses = log_due(&w->accept_pauses);
                if (pauses)
                    log_warn(l->text,
                             "accept: %s; pausing accepts for %d ms (%lu pauses on this worker "
                             "since the last such line)",
                             strerror(errno), RESUME_MS, pauses);
                stat_add(&w->stats->errors, 1);
                pause_accept(w, RESUME_MS);
                break;
            }
            log_error(l->text, "accept: %s", strerror(errno));
            stat_add(&w->stats->errors, 1);
            break;
        }
        n++;
        accept_one(w, l, fd, (struct sockaddr *)&ss, len);
    }
    return n;
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wlistener *l = arg;
    accept_batch(l->w, l, ACCEPT_BATCH);
}

/* Unlinks and frees; closes the socket unless it was given away (fd -1). */
static void listener_free(struct wlistener *l)
{
    list_remove(&l->node);
    if (l->ev)
        event_free(l->ev);
    if (l->fd >= 0)
        close(l->fd);
    free(l->service);
    free(l->text);
    free(l);
}

/* For a listener that goes away for good: take what is already queued so
 * that no waiting client is dropped. */
static void listener_close(struct worker *w, struct wlistener *l)
{
    if (!w->stopping || w->cfg->grace_ms > 0)
        accept_batch(w, l, 1 << 20);
    log_debug(l->text, "listener closed");
    listener_free(l);
}

/* Gives the socket, queue and all, back to the supervisor, which hands it
 * to a worker that stays. Without memory for the message the socket is
 * closed instead (its queue lost, and said so): l is gone either way. */
static void listener_give_back(struct worker *w, struct wlistener *l)
{
    struct listener_sock *ls = calloc(1, sizeof *ls);
    if (!ls) {
        log_error(l->text, "out of memory giving a socket back; closed, and its queue with it");
        listener_free(l);
        return;
    }
    event_del(l->ev);
    ls->id = l->id;
    ls->fd = l->fd;
    ls->disabled = l->disabled;
    ls->service = l->service;
    ls->text = l->text;
    l->fd = -1;
    l->service = l->text = NULL;
    listener_free(l);
    log_debug(ls->text, "socket given back by worker %d", w->id); /* ls is not ours after */
    struct msg m = {.type = MSG_LISTEN_BACK, .ptr = ls, .free_fn = listener_sock_free};
    bus_send(BUS_SUPERVISOR, &m);
}

static void resolve_listener(struct worker *w, struct wlistener *l)
{
    l->svc = config_service(w->cfg, l->service);
    l->proxy = l->tls = 0;
    for (size_t i = 0; l->svc && i < l->svc->nlisten; i++)
        if (strcmp(l->svc->listen[i].text, l->text) == 0) {
            l->proxy = l->svc->listen[i].proxy_protocol;
            l->tls = l->svc->listen[i].tls;
        }
    if (l->svc && !l->is_unix) {
        /* The kernel keeps a silent connection out of the accept queue for
         * up to this many seconds, then hands it over anyway. (A TLS
         * client always speaks first.) */
        int secs = (l->svc->module->flags & MODULE_DEFER_ACCEPT) || l->tls ? 1 : 0;
        if (setsockopt(l->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) < 0)
            log_warn(l->text, "TCP_DEFER_ACCEPT: %s", strerror(errno));
    }
}

static void on_listen_add(struct worker *w, struct listener_sock *ls)
{
    struct wlistener *l = calloc(1, sizeof *l);
    if (!l) {
        log_error(ls->text, "out of memory taking a listening socket; closed");
        listener_sock_free(ls);
        return;
    }
    l->w = w;
    l->id = ls->id;
    l->fd = ls->fd;
    l->service = ls->service;
    l->text = ls->text;
    l->is_unix = strncmp(ls->text, LIT("unix:")) == 0;
    l->disabled = ls->disabled;
    free(ls);
    list_insert_head(&w->listeners, &l->node);
    l->ev = event_new(w->base, l->fd, EV_READ | EV_PERSIST, accept_cb, l);
    if (!l->ev) {
        log_error(l->text, "cannot watch a listening socket; closed");
        listener_free(l);
        return;
    }
    resolve_listener(w, l);
    if (w->stopping) {
        /* The supervisor's order of messages does not send this, but should
         * it come: a Unix socket is shared (the supervisor keeps it), a TCP
         * one goes back or has its queue served before it closes. */
        if (l->is_unix)
            listener_free(l);
        else if (w->leaving)
            listener_give_back(w, l);
        else
            listener_close(w, l);
        return;
    }
    if (!w->accept_paused && !l->disabled)
        event_add(l->ev, NULL);
}

static void on_listen_remove(struct worker *w, uint32_t id)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->listeners)
    {
        struct wlistener *l = wlistener_of(pos);
        if (l->id == id)
            listener_close(w, l);
    }
}

/* MSG_LISTEN_SHED and MSG_LISTEN_RETURN: n of this listener's sockets go. */
static void let_sockets_go(struct worker *w, uint32_t id, unsigned n, int give_back)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->listeners)
    {
        struct wlistener *l = wlistener_of(pos);
        if (n == 0)
            break;
        if (l->id != id || l->is_unix)
            continue;
        n--;
        if (give_back) {
            listener_give_back(w, l);
        } else {
            log_debug(l->text, "surplus socket closed; the kernel migrates its queue");
            listener_free(l);
        }
    }
    if (n)
        log_warn(NULL, "listener %u: %u socket(s) fewer here than the supervisor thought", id, n);
}

static void on_config(struct worker *w, struct config *cfg)
{
    config_unref(w->cfg);
    w->cfg = cfg;
    struct list *pos;
    list_for_each(pos, &w->listeners)
    {
        resolve_listener(w, wlistener_of(pos));
    }
    for (unsigned i = 1; i <= module_count(); i++)
        if (module_at(i)->worker_config)
            module_at(i)->worker_config(w->mstate[i], cfg);
    resume_accept(w); /* worker_connections may have grown */
}

static void close_all(struct worker *w)
{
    struct list *pos;
    while ((pos = list_first(&w->conns)))
        conn_close(list_entry(pos, struct conn, node));
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->nconns)
        log_info(NULL, "grace period over: closing %zu connection(s)", w->nconns);
    close_all(w);
    event_base_loopexit(w->base, NULL);
}

/* Tells every session's module that the worker leaves or stops. */
static void drain_sessions(struct worker *w, unsigned grace_ms, int move)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->conns)
    {
        struct conn *c = list_entry(pos, struct conn, node);
        const struct module *m = c->svc->module;
        if (m->drain && !c->closing && c->handed) /* (a TLS handshake: see give_to_module) */
            m->drain(worker_module_state(w, m), c, grace_ms, move && m->adopt && conn_movable(c));
    }
}

static void arm_grace(struct worker *w, unsigned grace_ms)
{
    struct timeval tv = {grace_ms / 1000, (grace_ms % 1000) * 1000};
    event_add(w->grace_ev, &tv);
}

/* A stop while already stopping or leaving: a shorter grace wins, 0 is
 * now, and sessions that were to move are told the server stops. */
static void stop_again(struct worker *w, unsigned grace_ms)
{
    if (grace_ms == 0) {
        grace_cb(-1, 0, w);
        return;
    }
    if (w->leaving) {
        w->leaving = 0;
        drain_sessions(w, grace_ms, 0);
        if (w->nconns == 0) {
            event_base_loopexit(w->base, NULL);
            return;
        }
    }
    struct timeval left, now, want;
    event_base_gettimeofday_cached(w->base, &now);
    if (event_pending(w->grace_ev, EV_TIMEOUT, &left)) {
        want =
            (struct timeval){now.tv_sec + grace_ms / 1000, now.tv_usec + (grace_ms % 1000) * 1000};
        if (timercmp(&want, &left, <))
            arm_grace(w, grace_ms);
    }
}

static void on_stop(struct worker *w, unsigned grace_ms)
{
    if (w->stopping) {
        stop_again(w, grace_ms);
        return;
    }
    w->stopping = 1;
    struct list *pos;
    while ((pos = list_first(&w->listeners)))
        listener_close(w, wlistener_of(pos));
    if (grace_ms == 0 || w->nconns == 0) {
        grace_cb(-1, 0, w);
        return;
    }
    log_info(NULL, "stopping: %zu connection(s) have %u ms to finish", w->nconns, grace_ms);
    drain_sessions(w, grace_ms, 0);
    if (w->nconns == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    arm_grace(w, grace_ms);
}

static void on_drain(struct worker *w, unsigned grace_ms, unsigned flags)
{
    if (w->stopping)
        return;
    w->stopping = w->leaving = 1;
    struct list *pos;
    unsigned closed = 0, given = 0;
    while ((pos = list_first(&w->listeners))) {
        struct wlistener *l = wlistener_of(pos);
        if (l->is_unix || (flags & DRAIN_CLOSE_SOCKETS)) {
            /* Unix: the supervisor keeps the socket. TCP: the kernel moves
             * what is queued to the sockets of the workers that stay. */
            closed += !l->is_unix;
            listener_free(l);
        } else {
            listener_give_back(w, l);
            given++;
        }
    }
    log_info(NULL,
             "leaving: %u socket(s) closed, %u given back; %zu session(s) move or finish "
             "within %u ms",
             closed, given, w->nconns, grace_ms);
    if (w->nconns)
        drain_sessions(w, grace_ms, 1);
    if (w->nconns == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    arm_grace(w, grace_ms);
}

void worker_conn_gone(struct worker *w)
{
    if (w->stopping) {
        if (w->nconns == 0)
            event_base_loopexit(w->base, NULL);
    } else if (w->accept_paused && !event_pending(w->resume_ev, EV_TIMEOUT, NULL)) {
        resume_accept(w);
    }
}

static void reply_stats(struct worker *w, uint64_t req)
{
    struct worker_stats_snapshot *s = malloc(sizeof *s);
    if (!s) {
        log_error(NULL, "out of memory answering a statistics request");
        return;
    }
    stats_read(w->id, s);
    struct msg m = {.type = MSG_STATS_REPLY, .a = req, .ptr = s, .free_fn = free};
    bus_send(BUS_SUPERVISOR, &m);
}

/* ---- for modules ---- */

struct conn *worker_find_conn(struct worker *w, uint64_t id)
{
    struct list *pos;
    list_for_each(pos, &w->conns)
    {
        struct conn *c = list_entry(pos, struct conn, node);
        if (c->id == id)
            return c;
    }
    return NULL;
}

void worker_describe_conn(struct worker *w, struct conn *c, char *buf, size_t len)
{
    buf[0] = '\0';
    const struct module *m = c->svc->module;
    if (!c->handed)
        snprintf(buf, len, "TLS handshake");
    else if (m->describe)
        m->describe(worker_module_state(w, m), c, buf, len);
}

int worker_listeners_enable(struct worker *w, const char *which, int on)
{
    int n = 0;
    struct list *pos;
    list_for_each(pos, &w->listeners)
    {
        struct wlistener *l = wlistener_of(pos);
        if (strcmp(l->text, which) != 0 && strcmp(l->service, which) != 0)
            continue;
        l->disabled = !on;
        if (l->disabled)
            event_del(l->ev);
        else if (!w->accept_paused)
            event_add(l->ev, NULL);
        n++;
    }
    return n;
}

/* ---- the inbox ---- */

static void dispatch(struct msg *m, void *arg)
{
    struct worker *w = arg;
    if (m->module) {
        const struct module *mod = module_at(m->module);
        if (mod && mod->message) {
            mod->message(w->mstate[m->module], m);
            return;
        }
        log_error(NULL, "message %u for unknown module %u from thread %u", m->type, m->module,
                  m->from);
        msg_release(m);
        return;
    }
    switch (m->type) {
    case MSG_STOP:
        on_stop(w, (unsigned)m->a);
        break;
    case MSG_CONFIG:
        on_config(w, m->ptr);
        return;
    case MSG_LISTEN_ADD:
        on_listen_add(w, m->ptr);
        return;
    case MSG_LISTEN_REMOVE:
        on_listen_remove(w, (uint32_t)m->a);
        break;
    case MSG_LISTEN_SHED:
    case MSG_LISTEN_RETURN:
        let_sockets_go(w, (uint32_t)m->a, (unsigned)m->b, m->type == MSG_LISTEN_RETURN);
        break;
    case MSG_STATS_REQ:
        reply_stats(w, m->a);
        break;
    case MSG_DRAIN:
        on_drain(w, (unsigned)m->a, (unsigned)m->b);
        break;
    case MSG_CONN_MOVE:
        conn_adopt(w, m->ptr);
        return;
    case MSG_PING: { /* answered from the loop: a wedged loop does not answer */
        struct msg pong = {.type = MSG_PONG, .from = (uint16_t)w->id, .a = m->a};
        bus_send(BUS_SUPERVISOR, &pong);
        break;
    }
    case MSG_AUTH_BLOCK:
        throttle_on_block(m);
        break;
    case MSG_TLS_KEYS:
        tls_thread_keys(m->ptr);
        m->ptr = NULL; /* the thread has the reference */
        break;
    case MSG_STALL:
        if (getenv("MEDUSA_TEST_HOOKS")) { /* tests of the watchdog only */
            log_warn(NULL, "stalling the event loop for %llu ms (test hook)",
                     (unsigned long long)m->a);
            struct timespec stall = {(time_t)(m->a / 1000), (long)(m->a % 1000) * 1000000};
            nanosleep(&stall, NULL);
        }
        break;
    default:
        log_error(NULL, "unknown message type %u from thread %u", m->type, m->from);
    }
    msg_release(m);
}

/* ---- life cycle ---- */

struct worker *worker_new(int id, struct config *cfg)
{
    if (bus_register(id) < 0)
        return NULL;
    struct worker *w = calloc(1, sizeof *w);
    if (!w || !(w->mstate = calloc(module_count() + 1, sizeof *w->mstate))) {
        free(w);
        return NULL;
    }
    w->id = id;
    list_init(&w->listeners);
    list_init(&w->conns);
    list_init(&w->proxy_waits);
    w->stats = stats_slot(id);
    stats_reset(id);
    w->cfg = config_ref(cfg);
    w->tls_keys = tls_keys_current();
    w->throttle = throttle_snapshot();
    return w;
}

static void lag_arm(struct worker *w)
{
    clock_gettime(CLOCK_MONOTONIC, &w->lag_due);
    w->lag_due.tv_nsec += LAG_MS * 1000000L;
    if (w->lag_due.tv_nsec >= 1000000000L) {
        w->lag_due.tv_sec++;
        w->lag_due.tv_nsec -= 1000000000L;
    }
    struct timeval tv = {0, LAG_MS * 1000};
    event_add(w->lag_ev, &tv);
}

static void lag_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long late = (long long)(now.tv_sec - w->lag_due.tv_sec) * 1000000 +
                     (now.tv_nsec - w->lag_due.tv_nsec) / 1000;
    atomic_store_explicit(&w->stats->lag_us, late > 0 ? (uint64_t)late : 0, memory_order_relaxed);
    lag_arm(w);
}

static int modules_init(struct worker *w)
{
    for (unsigned i = 1; i <= module_count(); i++) {
        const struct module *m = module_at(i);
        if (m->worker_init && !(w->mstate[i] = m->worker_init(w))) {
            log_error(NULL, "module %s cannot start on this worker", m->name);
            return -1;
        }
    }
    return 0;
}

static void modules_dispose(struct worker *w)
{
    for (unsigned i = module_count(); i >= 1; i--)
        if (module_at(i)->worker_dispose && w->mstate[i])
            module_at(i)->worker_dispose(w->mstate[i]);
}

/* What the worker's thread does first: its loop, its inbox, every
 * module's worker state. 0, or -1 (worker_detach releases what was made). */
int worker_attach(struct worker *w)
{
    log_set_thread(w->id);
    tls_thread_init(w->id);
    tls_thread_keys(w->tls_keys);
    w->tls_keys = NULL;
    throttle_thread_start(w->throttle);
    w->throttle = NULL;
    struct event_config *ec = event_config_new();
    if (ec) /* this base is only ever touched by this thread */
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    w->base = ec ? event_base_new_with_config(ec) : NULL;
    if (ec)
        event_config_free(ec);
    if (!w->base || !(w->resume_ev = evtimer_new(w->base, resume_cb, w)) ||
        !(w->grace_ev = evtimer_new(w->base, grace_cb, w)) ||
        !(w->lag_ev = evtimer_new(w->base, lag_cb, w)) ||
        bus_thread_init(w->id, w->base, dispatch, w) < 0) {
        log_error(NULL, "cannot start the event loop");
        return -1;
    }
    w->attached = 1;
    lag_arm(w);
    return modules_init(w); /* else leave: the supervisor takes back what it sent */
}

/* What the worker's thread does last. */
void worker_detach(struct worker *w)
{
    if (w->attached) {
        struct list *pos;
        while ((pos = list_first(&w->listeners)))
            listener_free(wlistener_of(pos));
        /* Clients still sending their PROXY header when the worker ends. */
        while ((pos = list_first(&w->proxy_waits)))
            proxy_wait_free(list_entry(pos, struct proxy_wait, node), 1);
        close_all(w);
        modules_dispose(w);
        bus_thread_fini();
        tls_thread_keys(NULL);
        conn_tls_thread_end();
        w->attached = 0;
    }
    throttle_thread_end(); /* (worker_attach installed them first thing) */
    if (w->resume_ev)
        event_free(w->resume_ev);
    if (w->grace_ev)
        event_free(w->grace_ev);
    if (w->lag_ev)
        event_free(w->lag_ev);
    w->resume_ev = w->grace_ev = w->lag_ev = NULL;
}

void worker_close_conns(struct worker *w)
{
    close_all(w);
}

int worker_accept_fd(struct worker *w, const char *service, int fd, const char *peer)
{
    const struct service *svc = config_service(w->cfg, service);
    if (!svc) {
        close(fd);
        errno = ENOENT;
        return -1;
    }
    int domain = AF_UNIX;
    socklen_t len = sizeof domain;
    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
    hand_over(w, w->cfg, svc, fd, peer, service, domain == AF_UNIX, 0, 0, 0);
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (worker_attach(w) == 0) {
        log_debug(NULL, "worker started");
        event_base_dispatch(w->base);
        log_debug(NULL, "worker stopped");
    }
    worker_detach(w);
    struct msg m = {.type = MSG_WORKER_EXITED, .from = (uint16_t)w->id};
    bus_send(BUS_SUPERVISOR, &m);
    return NULL;
}

int worker_start(struct worker *w)
{
    bus_set_live(w->id, 1);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
        bus_set_live(w->id, 0);
        errno = rc;
        return -1;
    }
    return 0;
}

void worker_free(struct worker *w)
{
    if (w->base)
        event_base_free(w->base);
    config_unref(w->cfg);
    tls_keys_unref(w->tls_keys); /* a worker that never started */
    throttle_snapshot_free(w->throttle);
    free(w->mstate);
    free(w);
}

void worker_join_free(struct worker *w)
{
    pthread_join(w->thread, NULL);
    bus_set_live(w->id, 0);
    worker_free(w);
}
