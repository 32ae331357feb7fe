/*
 * Connection set-up, byte accounting, closing, and moving a session to
 * another worker. Bytes are counted by evbuffer callbacks, so modules never
 * have to remember to.
 *
 * A move (conn_move) detaches the descriptor: the module has released its
 * state and described the session in a blob; the bufferevent's buffers are
 * moved (not copied) into fresh evbuffers that belong to no event loop; the
 * descriptor leaves this worker's epoll set with the bufferevent. All of it
 * goes to the supervisor in MSG_CONN_MOVE, which forwards it to a worker
 * that is not leaving, where conn_adopt rebuilds the connection. Because
 * the bytes the kernel holds stay in the socket, and what was read but not
 * used travels in the input buffer, nothing the client sent is lost; what
 * was queued but not sent travels in the output buffer.
 */
#include "core/conn.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "core/module.h"
#include "core/tls.h"
#include "core/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct conn_move {
    int fd;
    uint64_t id;
    struct config *cfg; /* the session's snapshot (a reference) */
    const struct service *svc;
    uint64_t bytes_in, bytes_out;
    struct timeval started;
    time_t last_active;
    struct evbuffer *in, *out; /* bufferevent modules: unread input, unsent output */
    SSL *ssl;                  /* raw I/O modules' TLS, with what it has read */
    void *blob;
    void (*blob_free)(void *);
    unsigned proxied : 1;
    unsigned ip_counted : 1;
    char peer[64];
};

/* Connection ids are unique in the process, so one survives a move and the
 * console's 'kill' finds it wherever it went. */
static _Atomic uint64_t last_id;

static void touch(struct conn *c)
{
    struct timeval tv;
    event_base_gettimeofday_cached(c->w->base, &tv);
    c->last_active = tv.tv_sec;
}

static void count_in(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    struct conn *c = arg;
    if (info->n_added) {
        c->bytes_in += info->n_added;
        stat_add(&c->w->stats->bytes_in, info->n_added);
        touch(c);
    }
}

static void count_out(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    struct conn *c = arg;
    if (info->n_deleted) {
        c->bytes_out += info->n_deleted;
        stat_add(&c->w->stats->bytes_out, info->n_deleted);
        touch(c);
    }
}

/* A bufferevent keeps the end of its input frozen (only it reads from the
 * socket into it), so a moved session's unread input goes in with the
 * freeze lifted for a moment. */
static int put_input(struct bufferevent *bev, struct evbuffer *in)
{
    struct evbuffer *input = bufferevent_get_input(bev);
    evbuffer_unfreeze(input, 0);
    int rc = evbuffer_add_buffer(input, in);
    evbuffer_freeze(input, 0);
    return rc;
}

/* The part of accepting and adopting that is the same. The descriptor (and
 * ssl) are closed on failure. */
static struct conn *conn_setup(struct worker *w, const struct service *svc, int fd,
                               const char *peer, struct evbuffer *in, struct evbuffer *out,
                               SSL *ssl)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        log_error(peer, "out of memory for a connection; closed");
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->w = w;
    c->svc = svc;
    c->ssl = ssl;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    if (!(svc->module->flags & MODULE_RAW_IO)) {
        /* libevent closes the descriptor, after its last use of it: closing
         * it ourselves could come first when a callback closes the
         * connection, and the number could be another thread's by then.
         * With TLS it frees the SSL too. */
        c->bev = ssl ? tls_bufferevent(w->base, fd, ssl)
                     : bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev)
            ssl = NULL; /* libevent freed it */
        if (!c->bev || (in && put_input(c->bev, in) < 0) ||
            (out && evbuffer_add_buffer(bufferevent_get_output(c->bev), out) < 0) ||
            !evbuffer_add_cb(bufferevent_get_input(c->bev), count_in, c) ||
            !evbuffer_add_cb(bufferevent_get_output(c->bev), count_out, c)) {
            log_error(peer, "cannot set up connection buffers; closed");
            if (c->bev) {
                bufferevent_free(c->bev);
            } else {
                SSL_free(ssl);
                close(fd);
            }
            free(c);
            return NULL;
        }
    } else if (ssl && conn_tls_raw_setup(c) < 0) {
        log_error(peer, "cannot set up TLS for a connection; closed");
        SSL_free(ssl);
        close(fd);
        free(c);
        return NULL;
    }
    list_insert_head(&w->conns, &c->node);
    w->nconns++;
    stat_add(&w->stats->active, 1);
    return c;
}

struct conn *conn_new(struct worker *w, struct config *cfg, const struct service *svc, int fd,
                      const char *peer, int tls)
{
    SSL *ssl = NULL;
    if (tls && !(ssl = tls_new(svc->tls, fd, peer))) {
        close(fd);
        return NULL;
    }
    if (ssl && (svc->module->flags & MODULE_RAW_IO)) {
        /* A record in one read(2), not a header then a body; modules that
         * read through conn_read know of what is read ahead (conn_pending).
         * (libevent's TLS bufferevents do not: not for them.) */
        SSL_set_read_ahead(ssl, 1);
    }
    if (ssl) { /* the handshake's flights and the answers go out as they are made */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct conn *c = conn_setup(w, svc, fd, peer, NULL, NULL, ssl);
    if (!c)
        return NULL;
    c->id = atomic_fetch_add_explicit(&last_id, 1, memory_order_relaxed) + 1;
    c->cfg = config_ref(cfg);
    gettimeofday(&c->started, NULL);
    c->last_active = c->started.tv_sec;
    stat_add(&w->stats->accepted, 1);
    return c;
}

int conn_starttls(struct conn *c)
{
    if (!c->bev || c->ssl || !c->svc->tls)
        return -1;
    struct evbuffer *in = bufferevent_get_input(c->bev), *out = bufferevent_get_output(c->bev);
    size_t junk = evbuffer_get_length(in);
    if (junk)
        log_warn(c->peer, "%zu bytes sent before the TLS handshake dropped", junk);
    /* The reply is a line; a socket that cannot take it now is a client
     * that is not reading: give up. */
    evbuffer_unfreeze(out, 1);
    while (evbuffer_get_length(out)) {
        int n = evbuffer_write(out, c->fd);
        if (n <= 0) {
            log_info(c->peer, "cannot send the reply before TLS: %s",
                     n < 0 ? strerror(errno) : "connection closed");
            return -1;
        }
    }
    SSL *ssl = tls_new(c->svc->tls, c->fd, c->peer);
    if (!ssl)
        return -1;
    /* The plain bufferevent lets the descriptor go (it may be inside one
     * of its callbacks: libevent frees it afterwards). */
    evbuffer_remove_cb(in, count_in, c);
    evbuffer_remove_cb(out, count_out, c);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_setfd(c->bev, -1);
    bufferevent_free(c->bev);
    if (!(c->bev = tls_bufferevent(c->w->base, c->fd, ssl)))
        return -1; /* (the SSL with it) conn_close closes the descriptor: c->bev is NULL */
    c->ssl = ssl;
    if (!evbuffer_add_cb(bufferevent_get_input(c->bev), count_in, c) ||
        !evbuffer_add_cb(bufferevent_get_output(c->bev), count_out, c))
        return -1;
    bufferevent_disable(c->bev, EV_READ);
    return 0;
}

/* Off the worker's list and counters; the caller frees. */
static void conn_detach(struct conn *c)
{
    struct worker *w = c->w;
    list_remove(&c->node);
    w->nconns--;
    stat_sub(&w->stats->active, 1);
}

/* The connection no longer counts against its address's cap. */
static void ip_uncount(const struct service *svc, const char *peer)
{
    char host[64];
    iplimit_host(peer, host, sizeof host);
    iplimit_release(iplimit_slot(IPLIMIT_SERVICE, svc->name, host));
}

/* tell: the module's closed() runs (not when the module has already let
 * the connection go, as before a move). */
static void close_conn(struct conn *c, int tell)
{
    if (c->closing == 2)
        return;
    c->closing = 2;
    const struct module *m = c->svc->module;
    if (tell && c->handed && m->closed)
        m->closed(worker_module_state(c->w, m), c);
    struct worker *w = c->w;
    if (__builtin_expect(c->ssl != NULL, 0))
        conn_tls_release(c, tell);
    if (c->bev)
        bufferevent_free(c->bev); /* and its SSL */
    else
        close(c->fd);
    conn_detach(c);
    if (c->ip_counted)
        ip_uncount(c->svc, c->peer);
    stat_add(&w->stats->closed, 1);
    config_unref(c->cfg);
    free(c);
    worker_conn_gone(w);
}

void conn_close(struct conn *c)
{
    close_conn(c, 1);
}

static void flushed_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_close(arg);
}

static void flush_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_close(arg);
}

void conn_close_after_flush(struct conn *c, unsigned timeout_ms)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (!c->bev) { /* raw I/O modules flush before they ask */
        conn_close(c);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) == 0) {
        conn_close(c);
        return;
    }
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_setcb(c->bev, NULL, flushed_cb, flush_event_cb, c);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    bufferevent_enable(c->bev, EV_WRITE);
}

void conn_count_error(struct conn *c)
{
    stat_add(&c->w->stats->errors, 1);
}

enum conn_line conn_next_line(struct evbuffer *in, size_t max, unsigned *discarding, size_t *len,
                              size_t *skip)
{
    for (;;) {
        size_t eol_len = 0;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
        size_t avail = evbuffer_get_length(in);
        if (eol.pos < 0) {
            if (avail <= max && !*discarding)
                return CONN_LINE_NONE;
            int first = !*discarding;
            *discarding = 1;
            evbuffer_drain(in, avail);
            return first ? CONN_LINE_TOO_LONG : CONN_LINE_NONE;
        }
        if (*discarding || (size_t)eol.pos > max) {
            int first = !*discarding;
            *discarding = 0;
            evbuffer_drain(in, (size_t)eol.pos + eol_len);
            if (first)
                return CONN_LINE_TOO_LONG;
            continue;
        }
        *len = (size_t)eol.pos;
        *skip = (size_t)eol.pos + eol_len;
        return CONN_LINE_OK;
    }
}

size_t conn_peer_host(const struct conn *c, char *out, size_t len)
{
    return iplimit_host(c->peer, out, len);
}

int conn_peer_addr(const struct conn *c, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (!c->proxied) {
        *len = sizeof *ss;
        return getpeername(c->fd, (struct sockaddr *)ss, len);
    }
    /* The text sockaddr_text made of the PROXY header's address. */
    char host[64];
    const char *colon = strrchr(c->peer, ':');
    errno = EINVAL;
    if (!colon)
        return -1;
    conn_peer_host(c, host, sizeof host);
    unsigned port = (unsigned)atoi(colon + 1);
    if (c->peer[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
        return inet_pton(AF_INET6, host, &s6->sin6_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof *s4;
    return inet_pton(AF_INET, host, &s4->sin_addr) == 1 ? 0 : -1;
}

void conn_count_in(struct conn *c, size_t n)
{
    touch(c);
    c->bytes_in += n;
    stat_add(&c->w->stats->bytes_in, n);
}

void conn_count_out(struct conn *c, size_t n)
{
    touch(c);
    c->bytes_out += n;
    stat_add(&c->w->stats->bytes_out, n);
}

/* ---- moving a session ---- */

void conn_move_free(void *p)
{
    struct conn_move *mv = p;
    log_warn(mv->peer, "connection %llu closed: it could not be moved to another worker",
             (unsigned long long)mv->id);
    SSL_free(mv->ssl);
    if (mv->fd >= 0)
        close(mv->fd);
    if (mv->ip_counted)
        ip_uncount(mv->svc, mv->peer);
    if (mv->in)
        evbuffer_free(mv->in);
    if (mv->out)
        evbuffer_free(mv->out);
    if (mv->blob && mv->blob_free)
        mv->blob_free(mv->blob);
    config_unref(mv->cfg);
    free(mv);
}

uint64_t conn_move_id(const struct conn_move *mv)
{
    return mv->id;
}

/* Moves the bufferevent's buffers into loop-less evbuffers; -1 without
 * memory (nothing moved then). */
static int take_buffers(struct conn *c, struct conn_move *mv)
{
    struct evbuffer *in = bufferevent_get_input(c->bev), *out = bufferevent_get_output(c->bev);
    /* Moving bytes out is not receiving or sending them. */
    evbuffer_remove_cb(in, count_in, c);
    evbuffer_remove_cb(out, count_out, c);
    /* The bufferevent keeps the start of its output frozen (only it sends
     * from there); it is about to be freed. */
    evbuffer_unfreeze(out, 1);
    if (!(mv->in = evbuffer_new()) || !(mv->out = evbuffer_new()) ||
        evbuffer_add_buffer(mv->in, in) < 0 || evbuffer_add_buffer(mv->out, out) < 0)
        return -1;
    return 0;
}

void conn_move(struct conn *c, void *blob, void (*blob_free)(void *))
{
    struct worker *w = c->w;
    if (!conn_movable(c) || conn_unsent(c)) { /* the module should not have asked */
        log_error(c->peer, "a TLS session cannot move to another worker; connection %llu closed",
                  (unsigned long long)c->id);
        if (blob && blob_free)
            blob_free(blob);
        close_conn(c, 0);
        return;
    }
    struct conn_move *mv = calloc(1, sizeof *mv);
    if (!mv || (c->bev && take_buffers(c, mv) < 0)) {
        log_error(c->peer, "out of memory moving connection %llu; closed",
                  (unsigned long long)c->id);
        if (mv) {
            if (mv->in)
                evbuffer_free(mv->in);
            if (mv->out)
                evbuffer_free(mv->out);
            free(mv);
        }
        if (blob && blob_free)
            blob_free(blob);
        close_conn(c, 0); /* the module released its state already */
        return;
    }
    if (c->bev) {
        /* Off this loop at once, and the descriptor no longer the
         * bufferevent's: freeing it then leaves the descriptor open. */
        bufferevent_setfd(c->bev, -1);
        bufferevent_free(c->bev);
    }
    mv->fd = c->fd;
    mv->id = c->id;
    mv->cfg = c->cfg; /* the reference travels */
    mv->svc = c->svc;
    mv->bytes_in = c->bytes_in;
    mv->bytes_out = c->bytes_out;
    mv->started = c->started;
    mv->last_active = c->last_active;
    mv->blob = blob;
    mv->blob_free = blob_free;
    snprintf(mv->peer, sizeof mv->peer, "%s", c->peer);
    mv->proxied = c->proxied;
    mv->ip_counted = c->ip_counted;
    mv->ssl = c->ssl;
    conn_detach(c);
    stat_add(&w->stats->moved_out, 1);
    free(c);
    log_debug(mv->peer, "connection %llu leaves worker %d", (unsigned long long)mv->id, w->id);
    struct msg m = {.type = MSG_CONN_MOVE, .ptr = mv, .free_fn = conn_move_free};
    bus_send(BUS_SUPERVISOR, &m);
    worker_conn_gone(w);
}

void conn_adopt(struct worker *w, struct conn_move *mv)
{
    const struct module *m = mv->svc->module;
    struct conn *c = conn_setup(w, mv->svc, mv->fd, mv->peer, mv->in, mv->out, mv->ssl);
    mv->ssl = NULL; /* conn_setup has it, or freed it */
    if (mv->in)
        evbuffer_free(mv->in);
    if (mv->out)
        evbuffer_free(mv->out);
    mv->in = mv->out = NULL;
    if (!c) {
        mv->fd = -1; /* conn_setup closed it */
        conn_move_free(mv);
        return;
    }
    c->id = mv->id;
    c->cfg = mv->cfg;
    c->bytes_in = mv->bytes_in;
    c->bytes_out = mv->bytes_out;
    c->started = mv->started;
    c->last_active = mv->last_active;
    c->proxied = mv->proxied;
    c->ip_counted = mv->ip_counted;
    c->handed = 1;
    void *blob = mv->blob;
    free(mv);
    stat_add(&w->stats->moved_in, 1);
    log_debug(c->peer, "connection %llu moved to worker %d", (unsigned long long)c->id, w->id);
    m->adopt(worker_module_state(w, m), c, blob);
}
