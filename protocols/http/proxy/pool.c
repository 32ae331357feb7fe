/*
 * The proxy on one worker: each server's state as this worker knows it,
 * balancing, connecting, the keep-alive pools, passive health, and names
 * resolved with evdns on the worker's own loop.
 *
 * Pools. An idle upstream connection stays in its server's list (most
 * recently used first, so the rest age out) watched for EOF: a server that
 * closes it, or sends anything unasked, loses it at once. The tick closes
 * those idle longer than keepalive_timeout.
 *
 * Health. A worker counts consecutive failures per server; at max_fails it
 * stops using the server and tells the supervisor, which tells every
 * worker (PXM_STATE), so all of them avoid it. The supervisor's active
 * checks and the operator's `upstream disable|enable` arrive the same way.
 * When every server of an upstream is down, the worker tries them anyway
 * rather than fail without asking (a disabled server is never used).
 */
#include "protocols/http/proxy/proxy_impl.h"

#include "core/log.h"
#include "core/module.h"
#include "core/stats.h"
#include "core/worker.h"
#include "protocols/http/http.h"
#include "protocols/http/http_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 100
#define REQ_POOL_MAX 64
#define DNS_RETRY_MS 5000

uint64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct px_worker *px_worker_of(const struct http_req *r)
{
    return r->hc->hw->px;
}

static void set_err(struct px_wsrv *ws, enum px_err e)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    atomic_store_explicit(&ws->slot->last_err, (uint64_t)e, memory_order_relaxed);
    atomic_store_explicit(&ws->slot->last_err_ms,
                          (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                          memory_order_relaxed);
}

/* ---- requests: the pool ---- */

struct px_req *px_req_get(struct px_worker *pw)
{
    struct px_req *pr = pw->free_reqs;
    if (pr) {
        pw->free_reqs = pr->next_free;
        pw->nfree--;
        char *in = pr->in;
        size_t cap = pr->in_cap;
        struct sbuf out = pr->out;
        memset(pr, 0, offsetof(struct px_req, cev));
        pr->in = in;
        pr->in_cap = cap;
        pr->out = out;
        pr->out.len = 0;
        pr->out.failed = 0;
    } else if (!(pr = calloc(1, sizeof *pr))) {
        return NULL;
    }
    pr->pw = pw;
    pr->cfd = -1;
    pr->server = -1;
    return pr;
}

void px_req_put(struct px_req *pr)
{
    struct px_worker *pw = pr->pw;
    px_no_deadline(pr);
    if (pw->nfree >= REQ_POOL_MAX || pr->in_cap > 65536 || pr->out.cap > 65536) {
        free(pr->in);
        sb_free(&pr->out);
        free(pr);
        return;
    }
    pr->next_free = pw->free_reqs;
    pw->free_reqs = pr;
    pw->nfree++;
}

void px_deadline(struct px_req *pr, unsigned ms)
{
    pr->deadline = px_now_ms() + ms;
    if (!pr->in_list) {
        list_insert_head(&pr->pw->reqs, &pr->node);
        pr->in_list = 1;
    }
}

void px_no_deadline(struct px_req *pr)
{
    if (pr->in_list) {
        list_remove(&pr->node);
        pr->in_list = 0;
    }
    pr->deadline = 0;
}

/* ---- servers on this worker ---- */

/* The record's state on this worker, made on first use. */
static struct px_wsrv *wsrv_of_rec(struct px_worker *pw, struct px_rec *rec)
{
    unsigned id = rec->id;
    if (id >= pw->nsrv) {
        unsigned n = px_rec_count();
        if (n <= id)
            n = id + 1;
        struct px_wsrv **t = realloc(pw->srv, n * sizeof *t);
        if (!t)
            return NULL;
        memset(t + pw->nsrv, 0, (n - pw->nsrv) * sizeof *t);
        pw->srv = t;
        pw->nsrv = n;
    }
    struct px_wsrv *ws = pw->srv[id];
    if (!ws) {
        if (!(ws = calloc(1, sizeof *ws)))
            return NULL;
        ws->rec = rec;
        ws->slot = &rec->slots[pw->w->id];
        list_init(&ws->idle);
        list_init(&ws->waiters);
        pw->srv[id] = ws;
    }
    return ws;
}

struct px_wsrv *px_wsrv_get(struct px_worker *pw, const struct px_server *s)
{
    struct px_wsrv *ws = wsrv_of_rec(pw, s->rec);
    if (ws && s->kind == PX_NAME && !ws->host) { /* (a state message may have made it) */
        if (!(ws->host = strdup(s->host)))
            return NULL;
        ws->port = s->port;
    }
    return ws;
}

static struct px_wsrv *wsrv_by_id(struct px_worker *pw, unsigned id)
{
    return id < pw->nsrv ? pw->srv[id] : NULL;
}

/* ---- upstream connections ---- */

static void uconn_cb(evutil_socket_t fd, short what, void *arg);

void px_uconn_watch(struct px_uconn *uc, short what)
{
    if (uc->watching == what)
        return;
    if (uc->watching)
        event_del(&uc->ev);
    uc->watching = what;
    if (!what)
        return;
    event_assign(&uc->ev, uc->pw->w->base, uc->fd, what | EV_PERSIST, uconn_cb, uc);
    event_add(&uc->ev, NULL);
}

static void uconn_free(struct px_uconn *uc)
{
    px_uconn_watch(uc, 0);
    close(uc->fd);
    free(uc);
}

static void idle_remove(struct px_uconn *uc)
{
    list_remove(&uc->node);
    uc->ws->nidle--;
    stat_sub(&uc->ws->slot->idle, 1);
}

/* An idle connection became readable: the server closed it (or sent what
 * nobody asked for). Either way it is no longer usable. */
static void idle_readable(struct px_uconn *uc)
{
    char b[64];
    ssize_t n = recv(uc->fd, b, sizeof b, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        log_info(uc->addr, "upstream sent %zd unrequested bytes on an idle connection; closed", n);
    idle_remove(uc);
    uconn_free(uc);
}

static void uconn_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct px_uconn *uc = arg;
    if (uc->pr)
        px_io(uc, what);
    else
        idle_readable(uc);
}

void px_release(struct px_req *pr, int reusable)
{
    struct px_uconn *uc = pr->uc;
    if (!uc)
        return;
    pr->uc = NULL;
    uc->pr = NULL;
    struct px_wsrv *ws = uc->ws;
    ws->nactive--;
    stat_sub(&ws->slot->active, 1);
    const struct px_upstream *up = pr->up;
    if (!reusable || uc->connecting || ws->disabled || ws->nidle >= up->keepalive ||
        uc->nreq >= up->keepalive_requests) {
        uconn_free(uc);
        return;
    }
    uc->reused = 1;
    uc->idle_until = px_now_ms() + up->keepalive_ms;
    list_insert_head(&ws->idle, &uc->node);
    ws->nidle++;
    stat_add(&ws->slot->idle, 1);
    px_uconn_watch(uc, EV_READ);
}

static void close_idle(struct px_wsrv *ws)
{
    struct list *pos;
    while ((pos = list_first(&ws->idle))) {
        struct px_uconn *uc = list_entry(pos, struct px_uconn, node);
        idle_remove(uc);
        uconn_free(uc);
    }
}

/* ---- health ---- */

void px_note_failure(struct px_worker *pw, struct px_rec *rec, const struct px_upstream *up,
                     enum px_err e)
{
    struct px_wsrv *ws = wsrv_by_id(pw, rec->id);
    if (!ws)
        return;
    stat_add(&ws->slot->failures, 1);
    set_err(ws, e);
    close_idle(ws); /* after a failure, pooled connections are suspect too */
    if (!up->max_fails || ++ws->fails < up->max_fails || ws->down_until > px_now_ms())
        return;
    log_warn(rec->server, "upstream '%s': %u failures in a row (%s): marked down", rec->upstream,
             ws->fails, px_err_text(e));
    ws->down_until = up->check_ms ? PX_DOWN_FOREVER : px_now_ms() + up->fail_ms;
    ws->fails = 0;
    struct msg m = {.module = (uint16_t)module_id(&http_module),
                    .type = PXM_DOWN,
                    .a = rec->id,
                    .b = up->check_ms ? 0 : up->fail_ms};
    bus_send(BUS_SUPERVISOR, &m);
}

void px_note_success(struct px_worker *pw, struct px_rec *rec)
{
    struct px_wsrv *ws = wsrv_by_id(pw, rec->id);
    if (ws)
        ws->fails = 0;
}

void px_worker_message(struct px_worker *pw, struct msg *m)
{
    if (m->type != PXM_STATE) {
        msg_release(m);
        return;
    }
    struct px_rec *rec = px_rec_by_id((unsigned)m->a);
    unsigned st = (unsigned)(m->b & 0xff);
    uint64_t ms = m->b >> 8;
    msg_release(m);
    if (!rec)
        return;
    struct px_wsrv *ws = wsrv_by_id(pw, rec->id);
    if (!ws && st != PXS_UP && st != PXS_ENABLED)
        ws = wsrv_of_rec(pw, rec); /* a name's host comes with its first use */
    if (!ws)
        return;
    switch (st) {
    case PXS_UP:
        ws->down_until = 0;
        ws->fails = 0;
        break;
    case PXS_DOWN:
        ws->down_until = ms ? px_now_ms() + ms : PX_DOWN_FOREVER;
        close_idle(ws);
        break;
    case PXS_DISABLED:
        ws->disabled = 1;
        close_idle(ws); /* in-flight requests finish; nothing new starts */
        break;
    case PXS_ENABLED:
        ws->disabled = 0;
        break;
    }
}

/* ---- DNS ---- */

static void resolve(struct px_worker *pw, struct px_wsrv *ws, int ipv6);

struct dns_query {
    struct px_worker *pw;
    struct px_wsrv *ws;
    int ipv6;
};

static void wake_waiters(struct px_wsrv *ws)
{
    struct list *pos;
    while ((pos = list_first(&ws->waiters))) {
        list_remove(pos);
        struct px_req *pr = list_entry(pos, struct px_req, wait_node);
        pr->waiting = 0;
        px_proceed(pr);
    }
}

static void dns_cb(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct dns_query *q = arg;
    struct px_worker *pw = q->pw;
    struct px_wsrv *ws = q->ws;
    int ipv6 = q->ipv6;
    free(q);
    if (result == DNS_ERR_SHUTDOWN || result == DNS_ERR_CANCEL)
        return;
    if ((result != DNS_ERR_NONE || count <= 0) && !ipv6) {
        resolve(pw, ws, 1); /* no A record: try AAAA */
        return;
    }
    ws->resolving = 0;
    if (result != DNS_ERR_NONE || count <= 0) {
        log_warn(ws->rec->server, "upstream '%s': cannot resolve %s: %s", ws->rec->upstream,
                 ws->host, evdns_err_to_string(result));
        set_err(ws, PXE_DNS);
        ws->dns_expiry = px_now_ms() + DNS_RETRY_MS; /* keep what we had, ask again soon */
        wake_waiters(ws);
        return;
    }
    struct sockaddr_storage *a = calloc((size_t)count, sizeof *a);
    if (!a) {
        ws->dns_expiry = px_now_ms() + DNS_RETRY_MS; /* the waiters must not ask again now */
        wake_waiters(ws);
        return;
    }
    for (int i = 0; i < count; i++) {
        if (type == DNS_IPv4_A) {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&a[i];
            s4->sin_family = AF_INET;
            s4->sin_port = htons(ws->port);
            memcpy(&s4->sin_addr, (const char *)addresses + 4 * i, 4);
        } else {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a[i];
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons(ws->port);
            memcpy(&s6->sin6_addr, (const char *)addresses + 16 * i, 16);
        }
    }
    int changed = (unsigned)count != ws->naddrs || !ws->addrs ||
                  memcmp(a, ws->addrs, (size_t)count * sizeof *a) != 0;
    free(ws->addrs);
    ws->addrs = a;
    ws->naddrs = (unsigned)count;
    ws->next_addr = 0;
    if (ttl < 1)
        ttl = 1;
    if (ttl > 3600)
        ttl = 3600;
    ws->dns_expiry = px_now_ms() + (uint64_t)ttl * 1000;
    if (changed) {
        char text[64];
        sockaddr_text((struct sockaddr *)&a[0], sizeof a[0], text, sizeof text);
        log_info(ws->rec->server, "upstream '%s': %s is %s%s (ttl %d s)", ws->rec->upstream,
                 ws->host, text, count > 1 ? " and more" : "", ttl);
        close_idle(ws); /* connections to the old address go */
    }
    wake_waiters(ws);
}

static void resolve(struct px_worker *pw, struct px_wsrv *ws, int ipv6)
{
    struct evdns_base *d = px_dns_get(&pw->dns, pw->w->base, ws->resolver);
    struct dns_query *q = malloc(sizeof *q);
    ws->resolving = 1;
    if (d && q) {
        *q = (struct dns_query){pw, ws, ipv6};
        struct evdns_request *rq =
            ipv6 ? evdns_base_resolve_ipv6(d, ws->host, DNS_QUERY_NO_SEARCH, dns_cb, q)
                 : evdns_base_resolve_ipv4(d, ws->host, DNS_QUERY_NO_SEARCH, dns_cb, q);
        if (rq)
            return;
    }
    free(q);
    ws->resolving = 0;
    ws->dns_expiry = px_now_ms() + DNS_RETRY_MS;
    set_err(ws, PXE_DNS);
    log_warn(ws->rec->server, "upstream '%s': cannot ask DNS about %s", ws->rec->upstream,
             ws->host);
    wake_waiters(ws);
}

/* ---- choosing a server and connecting ---- */

static int usable(const struct px_wsrv *ws, uint64_t now, int allow_down)
{
    return ws && !ws->disabled && (allow_down || ws->down_until <= now);
}

static int pick(struct px_req *pr, uint64_t now)
{
    const struct px_upstream *up = pr->up;
    struct px_worker *pw = pr->pw;
    for (int allow_down = 0; allow_down < 2; allow_down++) {
        int best = -1, total = 0;
        struct px_wsrv *bw = NULL;
        size_t n = up->nservers, start = up->balance == PX_LEAST_CONN ? pw->lc_start++ % n : 0;
        for (size_t k = 0; k < n; k++) {
            size_t i = (start + k) % n;
            if (i < 64 && (pr->tried >> i & 1))
                continue;
            struct px_wsrv *ws = px_wsrv_get(pw, &up->servers[i]);
            if (!usable(ws, now, allow_down))
                continue;
            unsigned wt = up->servers[i].weight;
            if (up->balance == PX_ROUND_ROBIN) {
                ws->cur_weight += (int)wt;
                total += (int)wt;
                if (!bw || ws->cur_weight > bw->cur_weight)
                    best = (int)i, bw = ws;
            } else if (!bw || (uint64_t)ws->nactive * up->servers[best].weight <
                                  (uint64_t)bw->nactive * wt) {
                best = (int)i, bw = ws;
            }
        }
        if (bw) {
            if (up->balance == PX_ROUND_ROBIN)
                bw->cur_weight -= total;
            return best;
        }
    }
    return -1;
}

static void set_addr_text(struct px_uconn *uc, const struct sockaddr *sa, socklen_t len,
                          const struct px_server *s)
{
    if (sa->sa_family == AF_UNIX)
        snprintf(uc->addr, sizeof uc->addr, "%s", s->text);
    else
        sockaddr_text(sa, len, uc->addr, sizeof uc->addr);
}

/* A connection to server i: pooled, or a new one (connecting). 0, 1
 * (waiting for DNS), or -1 with *err. */
int px_connect_server(struct px_req *pr, int i, enum px_err *err)
{
    struct px_worker *pw = pr->pw;
    const struct px_server *s = &pr->up->servers[i];
    struct px_wsrv *ws = px_wsrv_get(pw, s);
    if (!ws) {
        *err = PXE_CONNECT;
        return -1;
    }
    struct px_uconn *uc = NULL;
    struct list *pos = list_first(&ws->idle);
    if (pos) {
        uc = list_entry(pos, struct px_uconn, node);
        idle_remove(uc);
    } else {
        const struct sockaddr *sa = (const struct sockaddr *)&s->ss;
        socklen_t len = s->sslen;
        if (s->kind == PX_NAME) {
            free(ws->resolver);
            ws->resolver = pr->up->resolver ? strdup(pr->up->resolver) : NULL;
            if (!ws->naddrs) {
                if (!ws->resolving && ws->dns_expiry <= px_now_ms())
                    resolve(pw, ws, 0);
                if (ws->resolving) { /* the first request for a name waits for it */
                    list_insert_tail(&ws->waiters, &pr->wait_node);
                    pr->waiting = 1;
                    pr->server = i;
                    return 1;
                }
                *err = PXE_DNS;
                return -1;
            }
            sa = (const struct sockaddr *)&ws->addrs[ws->next_addr++ % ws->naddrs];
            len =
                sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        }
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            log_error(s->text, "upstream socket: %s", strerror(errno));
            *err = PXE_CONNECT;
            return -1;
        }
        if (sa->sa_family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        int rc = connect(fd, sa, len);
        if (rc < 0 && errno != EINPROGRESS) {
            *err = errno == ECONNREFUSED || errno == ENOENT ? PXE_REFUSED : PXE_CONNECT;
            log_info(s->text, "upstream '%s': connect: %s", pr->up->name, strerror(errno));
            close(fd);
            return -1;
        }
        if (!(uc = calloc(1, sizeof *uc))) {
            close(fd);
            *err = PXE_CONNECT;
            return -1;
        }
        uc->pw = pw;
        uc->ws = ws;
        uc->fd = fd;
        uc->connecting = rc < 0;
        set_addr_text(uc, sa, len, s);
    }
    uc->pr = pr;
    uc->nreq++;
    pr->uc = uc;
    pr->server = i;
    ws->nactive++;
    stat_add(&ws->slot->active, 1);
    stat_add(&ws->slot->requests, 1);
    return 0;
}

int px_connect(struct px_req *pr, enum px_err *err)
{
    uint64_t now = px_now_ms(); /* *err: the caller's reason until an attempt fails */
    while (pr->ntries < pr->up->tries) {
        int i = pick(pr, now);
        if (i < 0)
            break;
        pr->ntries++;
        if (i < 64)
            pr->tried |= 1ull << i;
        enum px_err e;
        int rc = px_connect_server(pr, i, &e);
        if (rc >= 0)
            return rc;
        *err = e;
        px_note_failure(pr->pw, pr->up->servers[i].rec, pr->up, e);
    }
    if (*err == PXE_NONE)
        *err = PXE_REFUSED; /* nothing left to try (all disabled, or tried) */
    return -1;
}

/* ---- the worker ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct px_worker *pw = arg;
    uint64_t now = px_now_ms();
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &pw->reqs)
    {
        struct px_req *pr = list_entry(pos, struct px_req, node);
        if (pr->deadline && now >= pr->deadline) {
            px_no_deadline(pr);
            px_timeout(pr);
        }
    }
    if (++pw->ticks % (1000 / TICK_MS))
        return;
    for (unsigned i = 0; i < pw->nsrv; i++) {
        struct px_wsrv *ws = pw->srv[i];
        if (!ws)
            continue;
        list_for_each_safe(pos, tmp, &ws->idle)
        {
            struct px_uconn *uc = list_entry(pos, struct px_uconn, node);
            if (now >= uc->idle_until) {
                idle_remove(uc);
                uconn_free(uc);
            }
        }
        if (ws->host && ws->naddrs && !ws->resolving && now >= ws->dns_expiry)
            resolve(pw, ws, 0); /* the TTL ran out: ask again, keep using the old */
    }
}

struct px_worker *px_worker_new(struct worker *w)
{
    struct px_worker *pw = calloc(1, sizeof *pw);
    if (!pw)
        return NULL;
    pw->w = w;
    list_init(&pw->reqs);
    pw->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, pw);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!pw->tick || event_add(pw->tick, &tv) < 0) {
        if (pw->tick)
            event_free(pw->tick);
        free(pw);
        return NULL;
    }
    /* What the others already know about servers (down, disabled). */
    struct msg m = {.module = (uint16_t)module_id(&http_module), .type = PXM_SYNC};
    bus_send(BUS_SUPERVISOR, &m);
    return pw;
}

void px_worker_free(struct px_worker *pw)
{
    if (!pw)
        return;
    event_free(pw->tick);
    /* Queries in flight end (their callbacks see DNS_ERR_SHUTDOWN) while the
     * servers they name still exist. */
    px_dns_free(&pw->dns, 1);
    for (unsigned i = 0; i < pw->nsrv; i++) {
        struct px_wsrv *ws = pw->srv[i];
        if (!ws)
            continue;
        close_idle(ws);
        free(ws->host);
        free(ws->resolver);
        free(ws->addrs);
        free(ws);
    }
    free(pw->srv);
    while (pw->free_reqs) {
        struct px_req *pr = pw->free_reqs;
        pw->free_reqs = pr->next_free;
        free(pr->in);
        sb_free(&pr->out);
        free(pr);
    }
    free(pw);
}
