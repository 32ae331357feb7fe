/*
 * The worker thread: accept loop, inbox messages, graceful stop.
 *
 * Listening sockets. Every TCP listener is a separate SO_REUSEPORT socket per
 * worker, opened by the supervisor and handed over in MSG_LISTEN_ADD, so the
 * kernel spreads connections and each worker owns its socket. A Unix-domain
 * listener cannot be split that way: the supervisor opens one socket and
 * hands every worker its own dup(2) of it. Each worker polls its descriptor
 * level-triggered and races accept(2); the losers get EAGAIN. That costs a
 * wake-up per worker per connection, acceptable for local, low-rate Unix
 * traffic, and because the socket lives until the last worker closes its
 * copy, a worker that leaves never drops connections queued on it.
 *
 * Limits. At worker_connections the worker turns its listeners off (new
 * connections wait in the kernel queue) and turns them on when one closes.
 * When accept fails for lack of descriptors or memory, the listeners are off
 * for 100 ms rather than spinning on a readable socket.
 *
 * Stop. MSG_STOP closes the listeners after accepting what is already
 * queued, tells every protocol session how long it has, and when the grace
 * period ends closes what is left; the loop ends when no connection remains.
 */
#include "core/worker.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "protocols/protocol.h"

#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 64
#define RESUME_MS 100

struct wlistener {
    struct wlistener *next;
    struct worker *w;
    uint32_t id;
    int fd;
    int is_unix;
    char *service;
    char *text;
    const struct service *svc; /* resolved in w->cfg; NULL if the service went away */
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

void *worker_proto_state(struct worker *w, int proto)
{
    return proto >= 0 ? w->proto_state[proto] : NULL;
}

static void listeners_enable(struct worker *w, int on)
{
    for (struct wlistener *l = w->listeners; l; l = l->next) {
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
    if (!l->is_unix && l->svc->proto->tcp_nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct conn *c = conn_new(w, l->svc, fd, peer);
    if (!c)
        return;
    log_debug(peer, "accepted on %s (%s)", l->text, l->svc->name);
    int idx = protocol_index(l->svc->proto);
    l->svc->proto->accept(w->proto_state[idx], c);
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
                log_warn(l->text, "accept: %s; pausing accepts for %d ms", strerror(errno),
                         RESUME_MS);
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

static void listener_free(struct wlistener *l)
{
    if (l->ev)
        event_free(l->ev);
    if (l->fd >= 0)
        close(l->fd);
    free(l->service);
    free(l->text);
    free(l);
}

static void listener_close(struct worker *w, struct wlistener *l)
{
    /* Take what is already queued so that no waiting client is dropped;
     * with other workers still listening, new ones go to them. */
    if (!w->stopping || w->cfg->grace_ms > 0)
        accept_batch(w, l, 1 << 20);
    log_debug(l->text, "listener closed");
    listener_free(l);
}

static void resolve_listener(struct worker *w, struct wlistener *l)
{
    l->svc = config_service(w->cfg, l->service);
    if (l->svc && !l->is_unix) {
        /* The kernel keeps a silent connection out of the accept queue for
         * up to this many seconds, then hands it over anyway. */
        int secs = l->svc->proto->defer_accept ? 1 : 0;
        if (setsockopt(l->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) < 0)
            log_warn(l->text, "TCP_DEFER_ACCEPT: %s", strerror(errno));
    }
}

static void on_listen_add(struct worker *w, struct listener_sock *ls)
{
    struct wlistener *l = calloc(1, sizeof *l);
    if (!l || w->stopping) {
        free(l);
        listener_sock_free(ls);
        return;
    }
    l->w = w;
    l->id = ls->id;
    l->fd = ls->fd;
    l->service = ls->service;
    l->text = ls->text;
    l->is_unix = strncmp(ls->text, "unix:", 5) == 0;
    l->disabled = ls->disabled;
    free(ls);
    l->ev = event_new(w->base, l->fd, EV_READ | EV_PERSIST, accept_cb, l);
    if (!l->ev) {
        log_error(l->text, "cannot watch listener");
        listener_free(l);
        return;
    }
    resolve_listener(w, l);
    l->next = w->listeners;
    w->listeners = l;
    if (!w->accept_paused && !l->disabled)
        event_add(l->ev, NULL);
}

static void on_listen_remove(struct worker *w, uint32_t id)
{
    for (struct wlistener **p = &w->listeners; *p;) {
        if ((*p)->id == id) {
            struct wlistener *l = *p;
            *p = l->next;
            listener_close(w, l);
        } else {
            p = &(*p)->next;
        }
    }
}

static void on_config(struct worker *w, struct config *cfg)
{
    config_unref(w->cfg);
    w->cfg = cfg;
    for (struct wlistener *l = w->listeners; l; l = l->next)
        resolve_listener(w, l);
    resume_accept(w); /* worker_connections may have grown */
}

static void close_all(struct worker *w)
{
    while (w->conns)
        conn_close(w->conns);
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

/* Gives a listening socket, queue and all, to another worker: nothing
 * waiting on it is lost, which closing it would do. */
static void hand_over(struct wlistener *l, int target)
{
    struct listener_sock *ls = calloc(1, sizeof *ls);
    if (!ls) {
        log_error(l->text, "out of memory handing the socket to worker %d; kept", target);
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
    struct msg m = {.type = MSG_LISTEN_ADD, .ptr = ls, .free_fn = listener_sock_free};
    bus_send(target, &m);
    log_debug(ls->text, "socket handed to worker %d", target);
}

static void on_handoff(struct worker *w, uint32_t id, int target)
{
    for (struct wlistener **p = &w->listeners; *p; p = &(*p)->next) {
        struct wlistener *l = *p;
        if (l->id != id || l->is_unix)
            continue;
        *p = l->next;
        hand_over(l, target);
        listener_free(l);
        return;
    }
    log_warn(NULL, "no socket of listener %u to hand to worker %d", id, target);
}

static void on_stop(struct worker *w, unsigned grace_ms);

static void on_drain(struct worker *w, unsigned grace_ms, int target)
{
    while (w->listeners) {
        struct wlistener *l = w->listeners;
        w->listeners = l->next;
        if (!l->is_unix) /* Unix: the other workers hold the same socket */
            hand_over(l, target);
        listener_free(l);
    }
    log_info(NULL, "draining: listeners handed to worker %d", target);
    w->handing_over = 1;
    on_stop(w, grace_ms);
}

static void on_stop(struct worker *w, unsigned grace_ms)
{
    if (w->stopping) {
        if (grace_ms == 0) { /* a second, immediate stop */
            grace_cb(-1, 0, w);
        } else if (w->nconns) {
            /* Draining under an older, longer grace: a stop's shorter one
             * wins. */
            struct timeval left, now, want;
            event_base_gettimeofday_cached(w->base, &now);
            if (event_pending(w->grace_ev, EV_TIMEOUT, &left)) {
                want = (struct timeval){now.tv_sec + grace_ms / 1000,
                                        now.tv_usec + (grace_ms % 1000) * 1000};
                if (timercmp(&want, &left, <)) {
                    struct timeval tv = {grace_ms / 1000, (grace_ms % 1000) * 1000};
                    event_add(w->grace_ev, &tv);
                }
            }
        }
        return;
    }
    w->stopping = 1;
    while (w->listeners) {
        struct wlistener *l = w->listeners;
        w->listeners = l->next;
        listener_close(w, l);
    }
    if (grace_ms == 0 || w->nconns == 0) {
        grace_cb(-1, 0, w);
        return;
    }
    log_info(NULL, "stopping: %zu connection(s) have %u ms to finish", w->nconns, grace_ms);
    for (struct conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->svc->proto->stopping)
            c->svc->proto->stopping(w->proto_state[protocol_index(c->svc->proto)], c, grace_ms);
    }
    struct timeval tv = {grace_ms / 1000, (grace_ms % 1000) * 1000};
    event_add(w->grace_ev, &tv);
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
    if (!s)
        return;
    s->worker = w->id;
    s->accepted = stat_get(&w->stats->accepted);
    s->active = stat_get(&w->stats->active);
    s->closed = stat_get(&w->stats->closed);
    s->bytes_in = stat_get(&w->stats->bytes_in);
    s->bytes_out = stat_get(&w->stats->bytes_out);
    s->errors = stat_get(&w->stats->errors);
    struct msg m = {.type = MSG_STATS_REPLY, .a = req, .ptr = s, .free_fn = free};
    bus_send(BUS_SUPERVISOR, &m);
}

/* ---- the admin console's questions ---- */

static void admin_reply(struct worker *w, uint64_t query, uint64_t num, char *text)
{
    struct msg m = {.type = MSG_ADMIN_REPLY,
                    .from = (uint16_t)w->id,
                    .a = query,
                    .b = num,
                    .ptr = text,
                    .free_fn = free};
    bus_send(BUS_SUPERVISOR, &m);
}

static void admin_conns(struct worker *w, const char *service, int json, struct sbuf *sb)
{
    struct timeval now;
    event_base_gettimeofday_cached(w->base, &now);
    for (struct conn *c = w->conns; c; c = c->next) {
        if (service && strcmp(service, c->svc->name) != 0)
            continue;
        char what[160] = "";
        if (c->svc->proto->describe)
            c->svc->proto->describe(w->proto_state[protocol_index(c->svc->proto)], c, what,
                                    sizeof what);
        long long age = (long long)(now.tv_sec - c->started.tv_sec);
        long long idle = (long long)(now.tv_sec - c->last_active);
        if (json) {
            sb_addf(sb, "{\"id\":%llu,\"worker\":%d,\"service\":\"", (unsigned long long)c->id,
                    w->id);
            sb_add_json(sb, c->svc->name);
            sb_adds(sb, "\",\"peer\":\"");
            sb_add_json(sb, c->peer);
            sb_addf(sb,
                    "\",\"age_s\":%lld,\"idle_s\":%lld,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                    "\"state\":\"",
                    age, idle, (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out);
            sb_add_json(sb, what);
            sb_adds(sb, "\"}\n");
        } else {
            for (char *p = what; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    *p = '?';
            sb_addf(sb, "%-20llu %-6d %-12s %-24s %6lld %6lld %10llu %10llu %s\n",
                    (unsigned long long)c->id, w->id, c->svc->name, c->peer, age, idle,
                    (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out, what);
        }
    }
}

static void on_admin(struct worker *w, struct msg *m)
{
    switch (m->sub) {
    case ADMIN_CONNS: {
        struct sbuf sb = {0};
        admin_conns(w, m->ptr, (int)m->b, &sb);
        if (sb.failed)
            sb_free(&sb);
        admin_reply(w, m->a, 0, sb.p);
        break;
    }
    case ADMIN_KILL: {
        struct conn *c = w->conns;
        while (c && c->id != m->b)
            c = c->next;
        if (c) {
            log_info(c->peer, "connection %llu closed by the admin console",
                     (unsigned long long)c->id);
            conn_close(c);
        }
        admin_reply(w, m->a, c != NULL, NULL);
        break;
    }
    case ADMIN_LISTENER_OFF:
    case ADMIN_LISTENER_ON: {
        int n = 0;
        for (struct wlistener *l = w->listeners; l; l = l->next) {
            const char *which = m->ptr;
            if (strcmp(l->text, which) != 0 && strcmp(l->service, which) != 0)
                continue;
            l->disabled = m->sub == ADMIN_LISTENER_OFF;
            if (l->disabled)
                event_del(l->ev);
            else if (!w->accept_paused)
                event_add(l->ev, NULL);
            n++;
        }
        admin_reply(w, m->a, (uint64_t)n, NULL);
        break;
    }
    default:
        admin_reply(w, m->a, 0, NULL);
    }
}

static void dispatch(struct msg *m, void *arg)
{
    struct worker *w = arg;
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
    case MSG_STATS_REQ:
        reply_stats(w, m->a);
        break;
    case MSG_ADMIN:
        on_admin(w, m);
        break;
    case MSG_HANDOFF:
        on_handoff(w, (uint32_t)m->a, (int)m->b);
        break;
    case MSG_DRAIN:
        on_drain(w, (unsigned)m->a, (int)m->b);
        break;
    case MSG_PROTO:
        if (protocols_all[m->proto] && protocols_all[m->proto]->message) {
            protocols_all[m->proto]->message(w->proto_state[m->proto], m);
            return;
        }
        break;
    default:
        log_error(NULL, "unknown message type %u from thread %u", m->type, m->from);
    }
    msg_release(m);
}

struct worker *worker_new(int id, struct config *cfg)
{
    if (bus_register(id) < 0)
        return NULL;
    struct worker *w = calloc(1, sizeof *w);
    size_t nproto = 0;
    while (protocols_all[nproto])
        nproto++;
    if (!w || !(w->proto_state = calloc(nproto + 1, sizeof *w->proto_state))) {
        free(w);
        return NULL;
    }
    w->id = id;
    w->stats = stats_slot(id);
    memset(w->stats, 0, sizeof *w->stats);
    w->cfg = config_ref(cfg);
    return w;
}

/* Event-loop lag: a timer due every LAG_MS; how late it fires is how long
 * the loop was busy elsewhere. */
#define LAG_MS 250

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

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    log_set_thread(w->id);
    struct event_config *ec = event_config_new();
    /* This base is only ever touched by this thread. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base || bus_thread_init(w->id, w->base, dispatch, w) < 0) {
        log_error(NULL, "cannot start the event loop");
        goto out;
    }
    w->resume_ev = evtimer_new(w->base, resume_cb, w);
    w->grace_ev = evtimer_new(w->base, grace_cb, w);
    w->lag_ev = evtimer_new(w->base, lag_cb, w);
    lag_arm(w);
    for (int i = 0; protocols_all[i]; i++)
        if (protocols_all[i]->worker_start)
            w->proto_state[i] = protocols_all[i]->worker_start(w);
    log_debug(NULL, "worker started");

    event_base_dispatch(w->base);

    while (w->listeners) {
        struct wlistener *l = w->listeners;
        w->listeners = l->next;
        listener_free(l);
    }
    close_all(w);
    for (int i = 0; protocols_all[i]; i++)
        if (protocols_all[i]->worker_stop)
            protocols_all[i]->worker_stop(w->proto_state[i]);
    event_free(w->resume_ev);
    event_free(w->grace_ev);
    event_free(w->lag_ev);
    bus_thread_fini();
    log_debug(NULL, "worker stopped");
out:;
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

void worker_join_free(struct worker *w)
{
    pthread_join(w->thread, NULL);
    bus_set_live(w->id, 0);
    if (w->base)
        event_base_free(w->base);
    config_unref(w->cfg);
    free(w->proto_state);
    free(w);
}
