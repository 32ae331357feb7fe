/*
 * Workers coming and going: the console's 'workers set', 'worker drain' and
 * 'worker restart', where each TCP listener's sockets go meanwhile, and
 * where the sessions of a leaving worker go. Supervisor thread only.
 *
 * Nothing may be lost: not an established session, and not a connection
 * waiting in a listener's queue. Closing a SO_REUSEPORT socket drops its
 * queue (and, with TCP_DEFER_ACCEPT, the connections still in its SYN
 * queue), unless the kernel migrates them to the other sockets of the group
 * (net.ipv4.tcp_migrate_req = 1, Linux 5.14 and later, per network
 * namespace). So the supervisor reads that setting at each decision and
 * works in one of two modes:
 *
 *   migrating kernel: each listener holds exactly one socket per running
 *     worker. A new worker gets a new socket; a leaving worker closes its
 *     own (MSG_DRAIN with DRAIN_CLOSE_SOCKETS); a worker holding more than
 *     one closes the surplus (MSG_LISTEN_SHED). The kernel moves their
 *     queues to the sockets that stay.
 *   otherwise: sockets are never closed; they change hands. A leaving
 *     worker gives its sockets back to the supervisor (MSG_LISTEN_BACK),
 *     queue and all, and the supervisor hands each to the running worker
 *     holding fewest. A new socket is opened only when there are fewer
 *     sockets than running workers, so a listener never has more sockets
 *     than the most workers that ever ran at once, and they are spread as
 *     evenly as that count allows (the kernel spreads connections evenly
 *     over sockets, not over workers, so a worker holding two takes twice
 *     the share).
 *
 * Sockets and sessions move only through the supervisor, never from worker
 * to worker: the supervisor is the only one that knows which workers are
 * leaving, so whatever it forwards goes to a worker that is running, and
 * because its inbox is FIFO that worker receives the socket or session
 * before any later order to leave. A session that a leaving worker moves
 * (conn_move) reaches the supervisor as MSG_CONN_MOVE and goes on to the
 * running workers in turn.
 *
 * Unix listeners are one shared socket: the supervisor keeps a copy, every
 * worker gets a dup, and a leaving worker closes its dup.
 */
#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "core/supervisor_impl.h"
#include "core/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether closing a SO_REUSEPORT socket hands its queue to the others
 * (net.ipv4.tcp_migrate_req, per network namespace): read once per decision,
 * so that one decision never mixes the two modes. */
static int kernel_migrates(void)
{
    int fd = open("/proc/sys/net/ipv4/tcp_migrate_req", O_RDONLY | O_CLOEXEC);
    char c = '0';
    if (fd >= 0) {
        if (read(fd, &c, 1) != 1)
            c = '0';
        close(fd);
    }
    return c == '1';
}

static int running_ids(const struct supervisor *s, int *ids)
{
    int n = 0;
    for (int i = 0; i < s->nworkers; i++)
        if (!s->workers[i]->draining)
            ids[n++] = s->workers[i]->id;
    return n;
}

/* A new socket for worker id; 0, or -1 (logged). */
static int open_for(struct supervisor *s, struct sup_listener *l, int id)
{
    char err[256];
    int fd = listener_open(&l->addr, s->cfg->backlog, err, sizeof err);
    if (fd < 0) {
        log_error(l->addr.text, "worker %d gets no socket: %s", id, err);
        return -1;
    }
    l->held[id]++;
    sup_send_listener(id, l->id, fd, l->service, l->addr.text, l->disabled);
    return 0;
}

static void sockets_go(struct sup_listener *l, int id, unsigned n, int type)
{
    struct msg m = {.type = (uint16_t)type, .a = l->id, .b = n};
    bus_send(id, &m);
    l->held[id] = (uint16_t)(l->held[id] - n);
    if (type == MSG_LISTEN_RETURN) {
        l->returning += n;
        l->owed[id] = (uint16_t)(l->owed[id] + n);
    }
}

static void place_migrating(struct supervisor *s, struct sup_listener *l, const int *run, int n)
{
    for (int i = 0; i < n; i++) {
        if (l->held[run[i]] == 0)
            open_for(s, l, run[i]);
        else if (l->held[run[i]] > 1)
            sockets_go(l, run[i], l->held[run[i]] - 1u, MSG_LISTEN_SHED);
    }
}

static void place_handing(struct supervisor *s, struct sup_listener *l, int *run, int n)
{
    unsigned total = l->returning;
    for (int i = 0; i < n; i++)
        total += l->held[run[i]];
    for (int i = 0; i < n && total < (unsigned)n; i++)
        if (l->held[run[i]] == 0 && open_for(s, l, run[i]) == 0)
            total++;
    /* The workers holding most keep the odd sockets: fewest moves. */
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && l->held[run[k]] > l->held[run[k - 1]]; k--) {
            int t = run[k];
            run[k] = run[k - 1];
            run[k - 1] = t;
        }
    unsigned base = total / (unsigned)n, extra = total % (unsigned)n;
    for (int i = 0; i < n; i++) {
        unsigned want = base + ((unsigned)i < extra);
        if (l->held[run[i]] > want)
            sockets_go(l, run[i], l->held[run[i]] - want, MSG_LISTEN_RETURN);
    }
    /* The deficits are filled as the sockets come back. */
}

static void place_all(struct supervisor *s, int migrate)
{
    int run[BUS_MAX_WORKERS];
    int n = running_ids(s, run);
    if (n == 0 || s->stopping)
        return;
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        struct sup_listener *l = sup_listener_of(pos);
        if (l->addr.family == AF_UNIX)
            continue;
        if (migrate)
            place_migrating(s, l, run, n);
        else
            place_handing(s, l, run, n);
    }
}

void scaling_place_sockets(struct supervisor *s)
{
    place_all(s, kernel_migrates());
}

void scaling_give_unix(struct supervisor *s, struct worker *w)
{
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        struct sup_listener *l = sup_listener_of(pos);
        if (l->addr.family != AF_UNIX)
            continue;
        int fd = l->keep_fd >= 0 ? fcntl(l->keep_fd, F_DUPFD_CLOEXEC, 0) : -1;
        if (fd < 0) {
            log_error(l->addr.text, "dup for worker %d: %s", w->id, strerror(errno));
            continue;
        }
        sup_send_listener(w->id, l->id, fd, l->service, l->addr.text, l->disabled);
    }
}

static struct sup_listener *listener_by_id(struct supervisor *s, uint32_t id)
{
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        if (sup_listener_of(pos)->id == id)
            return sup_listener_of(pos);
    }
    return NULL;
}

/* A TCP socket with nobody holding it: to the running worker holding
 * fewest. */
static void place_socket(struct supervisor *s, struct listener_sock *ls)
{
    struct sup_listener *l = listener_by_id(s, ls->id);
    int to = 0;
    for (int i = 0; !s->stopping && i < s->nworkers; i++) {
        int id = s->workers[i]->id;
        if (!s->workers[i]->draining && (!to || (l && l->held[id] < l->held[to])))
            to = id;
    }
    if (to && !l) {
        /* A reload removed the listener on its way back: a worker serves
         * what is queued on it, as every worker did at the removal. */
        struct msg add = {.type = MSG_LISTEN_ADD, .ptr = ls, .free_fn = listener_sock_free};
        struct msg remove = {.type = MSG_LISTEN_REMOVE, .a = ls->id};
        bus_send(to, &add);
        bus_send(to, &remove);
        return;
    }
    if (!to && s->stopping && s->nworkers) {
        /* A stopping worker takes what is queued on it before it closes it
         * (it has had its MSG_STOP first: that went before this). */
        struct msg add = {.type = MSG_LISTEN_ADD, .ptr = ls, .free_fn = listener_sock_free};
        bus_send(s->workers[0]->id, &add);
        return;
    }
    if (!to || (l->held[to] >= 1 && kernel_migrates())) {
        /* No worker at all, or every running worker has one and the kernel
         * migrates the queue. */
        log_debug(ls->text, "returned socket closed");
        listener_sock_free(ls);
        return;
    }
    l->held[to]++;
    ls->disabled = l->disabled; /* the console may have changed it meanwhile */
    struct msg m = {.type = MSG_LISTEN_ADD, .ptr = ls, .free_fn = listener_sock_free};
    bus_send(to, &m);
}

void scaling_on_listen_back(struct supervisor *s, struct listener_sock *ls, int from)
{
    struct sup_listener *l = listener_by_id(s, ls->id);
    if (l && l->owed[from]) {
        l->owed[from]--;
        l->returning--;
    }
    place_socket(s, ls);
}

void scaling_on_conn_move(struct supervisor *s, struct msg *m)
{
    int run[BUS_MAX_WORKERS];
    int n = s->stopping ? 0 : running_ids(s, run);
    if (n == 0) {
        msg_release(m); /* closes it, and says so */
        return;
    }
    int to = run[s->next_target++ % (unsigned)n];
    log_debug(NULL, "connection %llu goes to worker %d", (unsigned long long)conn_move_id(m->ptr),
              to);
    bus_send(to, m);
}

static void reclaim(struct msg *m, void *arg)
{
    struct supervisor *s = arg;
    if (m->module == 0 && m->type == MSG_CONN_MOVE) {
        scaling_on_conn_move(s, m);
        return;
    }
    if (m->module == 0 && m->type == MSG_LISTEN_ADD) {
        struct listener_sock *ls = m->ptr;
        if (strncmp(ls->text, LIT("unix:")) == 0)
            listener_sock_free(ls); /* a dup: the supervisor keeps the socket */
        else
            place_socket(s, ls);
        return;
    }
    msg_release(m);
}

void scaling_worker_gone(struct supervisor *s, int id)
{
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        /* It closed what it held when it ended, and what it still owed back
         * will not come. */
        struct sup_listener *l = sup_listener_of(pos);
        l->held[id] = 0;
        l->returning -= l->owed[id];
        l->owed[id] = 0;
    }
    bus_reclaim(id, reclaim, s);
}

/* ---- workers ---- */

static int free_worker_id(const struct supervisor *s)
{
    for (int id = 1; id <= BUS_MAX_WORKERS; id++) {
        int used = bus_is_live(id);
        for (int i = 0; i < s->nworkers && !used; i++)
            used = s->workers[i]->id == id;
        if (!used)
            return id;
    }
    return -1;
}

/* A new running worker; its TCP sockets come from scaling_place_sockets. */
static struct worker *spawn(struct supervisor *s)
{
    int id = free_worker_id(s);
    struct worker *w = id > 0 ? worker_new(id, s->cfg) : NULL;
    if (!w)
        return NULL;
    bus_reclaim(id, reclaim, s); /* anything sent to an earlier worker with this id */
    for (int i = 0; i < s->nstopped; i++)
        if (s->stopped[i] == id) { /* its counters are about to restart */
            memmove(&s->stopped[i], &s->stopped[i + 1],
                    sizeof *s->stopped * (size_t)(s->nstopped - i - 1));
            s->nstopped--;
            break;
        }
    if (worker_start(w) < 0) {
        log_error(NULL, "cannot start worker %d: %s", id, strerror(errno));
        worker_free(w);
        return NULL;
    }
    s->workers[s->nworkers++] = w;
    s->running++;
    scaling_give_unix(s, w);
    return w;
}

/* The worker will stop taking connections and leave once its sessions have
 * moved or finished. Its sockets are closed (a migrating kernel) or come
 * back to be placed; see the top of this file. Only the bookkeeping: the
 * order itself (send_drain) goes after the sockets are placed, so that a
 * closing socket's queue always has another socket to migrate to. */
static void mark_leaving(struct supervisor *s, struct worker *w, int migrate)
{
    w->draining = 1;
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        struct sup_listener *l = sup_listener_of(pos);
        if (!migrate) {
            l->returning += l->held[w->id];
            l->owed[w->id] = (uint16_t)(l->owed[w->id] + l->held[w->id]);
        }
        l->held[w->id] = 0;
    }
}

static void send_drain(struct supervisor *s, struct worker *w, int migrate)
{
    struct msg m = {
        .type = MSG_DRAIN, .a = s->cfg->grace_ms, .b = migrate ? DRAIN_CLOSE_SOCKETS : 0};
    bus_send(w->id, &m);
    log_info(NULL, "worker %d leaving: sockets %s, sessions move (grace %u ms)", w->id,
             migrate ? "closed (the kernel migrates their queues)" : "handed to the others",
             s->cfg->grace_ms);
}

static struct worker *find_running(struct supervisor *s, int id)
{
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i]->id == id && !s->workers[i]->draining)
            return s->workers[i];
    return NULL;
}

int sup_scale(struct supervisor *s, int n, char *msg, size_t len)
{
    if (s->stopping) {
        snprintf(msg, len, "the server is stopping");
        return -1;
    }
    int run = sup_nrunning(s);
    if (n < 1 || n > BUS_MAX_WORKERS || s->nworkers - run + n > BUS_MAX_WORKERS) {
        snprintf(msg, len, "workers must be from 1 to %d (draining ones count until they leave)",
                 BUS_MAX_WORKERS);
        return -1;
    }
    int started = 0, drained = 0, migrate = kernel_migrates();
    for (; run < n && spawn(s); run++)
        started++;
    /* The highest ids leave. */
    struct worker *leaving[BUS_MAX_WORKERS];
    for (int i = s->nworkers - 1; i >= 0 && run > n; i--) {
        if (s->workers[i]->draining)
            continue;
        mark_leaving(s, s->workers[i], migrate);
        leaving[drained++] = s->workers[i];
        run--;
    }
    place_all(s, migrate);
    for (int i = 0; i < drained; i++)
        send_drain(s, leaving[i], migrate);
    snprintf(msg, len, "%d worker%s running: %d started, %d leaving\n", run, run == 1 ? "" : "s",
             started, drained);
    log_info(NULL, "workers set %d: %d started, %d leaving (%s)", n, started, drained,
             migrate ? "the kernel migrates socket queues" : "sockets change hands");
    return started + drained || run == n ? 0 : -1;
}

int sup_drain(struct supervisor *s, int id, int restart, char *msg, size_t len)
{
    struct worker *w = s->stopping ? NULL : find_running(s, id);
    if (!w) {
        snprintf(msg, len, "no running worker %d", id);
        return -1;
    }
    int fresh = 0;
    if (restart) {
        struct worker *nw = spawn(s);
        if (!nw) {
            snprintf(msg, len, "cannot start a replacement for worker %d", id);
            return -1;
        }
        fresh = nw->id;
    } else if (sup_nrunning(s) < 2) {
        snprintf(msg, len, "worker %d is the last one running: start another first", id);
        return -1;
    }
    int migrate = kernel_migrates();
    mark_leaving(s, w, migrate);
    place_all(s, migrate);
    send_drain(s, w, migrate);
    if (restart)
        snprintf(msg, len, "worker %d leaving; worker %d took its place\n", id, fresh);
    else
        snprintf(msg, len, "worker %d leaving; its sessions move to the others\n", id);
    return 0;
}
