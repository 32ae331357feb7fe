/*
 * HTTP/1.x connections: socket I/O, states and timeouts, keep-alive, the
 * request pool, sending responses, and moving idle connections to another
 * worker when this one leaves. http_conn.h lists the module's files and
 * says what an idle connection holds.
 *
 * Timeouts. Every connection has one deadline for its state (header,
 * body, send, keep-alive, lingering close); a per-worker tick checks them.
 * That costs nothing per request and a pass over the connections four
 * times a second.
 *
 * Sending. The head and a small or cached body go out with one writev; file
 * bodies with sendfile, at most SEND_SLICE per wake-up so that one fast
 * client cannot monopolise the worker, and only as fast as the client
 * reads: nothing is read from the file ahead of the socket.
 *
 * Leaving. When the worker leaves because the server scales down, an idle
 * keep-alive connection (no request, no buffer) moves to another worker at
 * once, and a busy one as soon as its response is sent: no client is told
 * to close, and none loses a request. When the server stops, the next
 * answer says Connection: close and idle connections close.
 */
#include "protocols/http/http_conn.h"

#include "core/conn.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/worker.h"
#include "protocols/http/proxy/upstream.h"

#include <errno.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 250
#define LINGER_MS 2000
#define SEND_SLICE (1 << 20)
#define POOL_MAX 64
#define BUF_INITIAL 4096
#define OUT_INITIAL 1024
#define HDRS_INITIAL 16

static void flush(struct http_conn *hc);
static void move(struct http_conn *hc);

uint64_t http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const struct http_server *srv_of(const struct http_conn *hc)
{
    return hc->c->svc->pcfg;
}

struct http_counters *http_conn_counters(const struct http_conn *hc)
{
    return http_counters_slot(srv_of(hc)->stats, hc->hw->w->id);
}

/* ---- requests: the pool ---- */

static struct http_req *req_get(struct http_conn *hc)
{
    struct http_worker *hw = hc->hw;
    struct http_req *r = hw->pool;
    if (r) {
        hw->pool = r->next_free;
        hw->npool--;
    } else {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
        r->buf = malloc(BUF_INITIAL);
        r->out = malloc(OUT_INITIAL);
        r->hdrs = malloc(HDRS_INITIAL * sizeof *r->hdrs);
        if (!r->buf || !r->out || !r->hdrs) {
            free(r->buf);
            free(r->out);
            free(r->hdrs);
            free(r);
            return NULL;
        }
        r->cap = BUF_INITIAL;
        r->out_cap = OUT_INITIAL;
        r->hdrs_cap = HDRS_INITIAL;
    }
    r->hc = hc;
    r->c = hc->c;
    r->srv = srv_of(hc);
    r->len = 0;
    r->file_fd = -1;
    llhttp_init(&r->parser, HTTP_REQUEST, &http_parser_settings);
    r->parser.data = r;
    return r;
}

/* Forgets the request's parse and response state; keeps the buffers. */
static void req_reset(struct http_req *r)
{
    http_resp_forget(r);
    free(r->path);
    r->path = NULL;
    r->len = r->parsed = r->head_end = 0;
    r->url = r->url_len = 0;
    r->nhdrs = 0;
    r->head_bytes = 0;
    r->in_value = 0;
    r->chunk_check = 0;
    r->error_status = 0;
    memset(&r->target, 0, sizeof r->target);
    memset(&r->query, 0, sizeof r->query);
    memset(r->known, 0, sizeof r->known);
    r->vhost = NULL;
    r->handler = NULL;
    r->hstate = NULL;
    r->body_max = r->body_seen = 0;
    r->expects_body = r->body_taken = r->body_done = 0;
    r->user[0] = '\0';
    r->status = 0;
    r->out_len = r->out_off = 0;
    r->body_bytes = 0;
    r->close_after = 0;
    r->responded = 0;
    r->held = r->body_paused = r->streaming = r->stream_chunks = r->stream_ended = r->tunnel = 0;
    r->upstream_status = 0;
    r->upstream_ms = 0;
    r->upstream[0] = '\0';
}

void http_req_abort_body(struct http_req *r)
{
    if (((r->body_taken && !r->body_done) || r->held) && r->handler && r->handler->ops->on_abort)
        r->handler->ops->on_abort(r);
    r->body_taken = 0;
    r->held = 0;
}

static void req_put(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    if (!r)
        return;
    hc->req = NULL;
    http_req_abort_body(r);
    req_reset(r);
    struct http_worker *hw = hc->hw;
    if (hw->npool >= POOL_MAX || r->cap > BUF_INITIAL * 4 || r->out_cap > OUT_INITIAL * 16) {
        free(r->buf);
        free(r->out);
        free(r->hdrs);
        free(r);
        return;
    }
    r->next_free = hw->pool;
    hw->pool = r;
    hw->npool++;
}
/* ---- event plumbing ---- */

static void io_cb(evutil_socket_t fd, short what, void *arg);

/* TLS may hold the next bytes already (read from the socket with the
 * record before): the socket will not say so, so the loop is told. */
static __attribute__((noinline)) void tls_read_pending(struct http_conn *hc)
{
    if (conn_pending(hc->c))
        event_active(&hc->ev, EV_READ, 1);
}

/* Inlined into this file's callers (the response path's); http_watch is
 * the same for the other files. */
static inline __attribute__((always_inline)) void watch(struct http_conn *hc, short what)
{
    if (hc->watching == what && (what || !hc->kicked)) {
        if (__builtin_expect(hc->tls, 0) && what == EV_READ)
            tls_read_pending(hc);
        return;
    }
    if (hc->watching || hc->kicked)
        event_del(&hc->ev);
    hc->kicked = 0;
    hc->watching = what;
    if (!what)
        return;
    event_assign(&hc->ev, hc->hw->w->base, hc->c->fd, what | EV_PERSIST, io_cb, hc);
    event_add(&hc->ev, NULL);
    if (__builtin_expect(hc->tls, 0) && what == EV_READ)
        tls_read_pending(hc);
}

void http_watch(struct http_conn *hc, short what)
{
    watch(hc, what);
}

void http_kick(struct http_conn *hc)
{
    if (hc->state == HC_WAIT || hc->state == HC_BODY) {
        if (hc->state == HC_BODY) /* an early answer: the rest of the body is not read */
            hc->req->body_taken = 0;
        http_set_state(hc, HC_WRITE);
    }
    if (hc->state != HC_WRITE || hc->watching == EV_WRITE || hc->kicked)
        return;
    /* Activated without epoll: flushed on this loop turn, after the
     * handler's callback has returned. A connection still registered for
     * reading (a request waiting for its answer) stays so: no epoll_ctl
     * per request. */
    if (!hc->watching)
        event_assign(&hc->ev, hc->hw->w->base, hc->c->fd, EV_WRITE | EV_PERSIST, io_cb, hc);
    event_active(&hc->ev, EV_WRITE, 1);
    hc->kicked = 1;
}

void http_set_state(struct http_conn *hc, enum hc_state st)
{
    const struct http_server *srv = srv_of(hc);
    unsigned ms = 0;
    switch (st) {
    case HC_IDLE:
        ms = hc->nreq ? srv->keepalive_timeout_ms : srv->header_timeout_ms;
        break;
    case HC_HEAD:
        ms = srv->header_timeout_ms;
        break;
    case HC_BODY:
        ms = srv->body_timeout_ms;
        break;
    case HC_WRITE:
        ms = srv->send_timeout_ms;
        break;
    case HC_LINGER:
        ms = LINGER_MS;
        break;
    case HC_WAIT:
    case HC_TUNNEL:
        hc->state = st;
        hc->deadline = 0;
        return;
    }
    hc->state = st;
    hc->deadline = http_now_ms() + ms;
}

void http_conn_close(struct http_conn *hc)
{
    conn_close(hc->c); /* calls http_closed, which frees hc */
}

/* After a response that leaves unread input behind: closing now would
 * make the kernel send a reset that can destroy the response on its way,
 * so stop sending, read and drop what comes, and close at EOF or after
 * LINGER_MS (nginx's lingering close). */
static void linger(struct http_conn *hc)
{
    req_put(hc);
    conn_shutdown_write(hc->c);
    http_set_state(hc, HC_LINGER);
    watch(hc, EV_READ);
}
/* A response is out (or a 101 head): the access log, the counters. Inlined:
 * with two callers LTO would not, and it is on every response (+17
 * instructions a request, http_instructions.py). */
static inline __attribute__((always_inline)) void count_response(struct http_conn *hc,
                                                                 struct http_req *r)
{
    if (r->srv->access_fd >= 0) /* (out of line: most servers log nothing) */
        http_access_log(hc, r);
    struct http_counters *ct = http_conn_counters(hc);
    stat_add(&ct->requests, 1);
    stat_add(&hc->c->w->stats->requests, 1);
    int cls = r->status / 100;
    stat_add(&ct->status[cls >= 1 && cls <= 5 ? cls : 0], 1);
    hc->nreq++;
}

/* The response is sent: log it, then read the next request, move, or
 * close. */
static void response_done(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    if (hc->corked)
        http_cork(hc, 0);
    count_response(hc, r);
    if (r->close_after || hc->stopping) {
        if (r->len > r->parsed || !r->body_done)
            linger(hc);
        else
            http_conn_close(hc);
        return;
    }
    /* Keep-alive: what follows the message is the next request. A small
     * answer must not wait behind the previous one's unacknowledged tail
     * (Nagle); a connection that closes after one answer never needs it. */
    if (!hc->nodelay) {
        int one = 1;
        setsockopt(hc->c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        hc->nodelay = 1;
    }
    size_t rest = r->len - r->parsed;
    memmove(r->buf, r->buf + r->parsed, rest);
    req_reset(r);
    r->len = rest;
    r->parsed = 0;
    watch(hc, EV_READ);
    if (!rest) {
        req_put(hc);
        http_set_state(hc, HC_IDLE);
        if (hc->moving)
            move(hc);
        return;
    }
    http_set_state(hc, HC_HEAD);
    http_process(hc);
}

/* The 101 head is out: the socket is the handler's from now on. */
static void tunnel_start(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    count_response(hc, r);
    watch(hc, 0);
    http_set_state(hc, HC_TUNNEL);
    r->handler->ops->on_tunnel(r, hc->c, r->buf + r->parsed, r->len - r->parsed);
}

void http_tunnel_close(struct http_req *r)
{
    r->held = 0;
    http_conn_close(r->hc);
}

/* What an HTTP_ASYNC stream queued is out (kept out of flush, the static
 * files' hot path). */
static __attribute__((noinline)) void stream_sent(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    if (r->tunnel) {
        tunnel_start(hc);
    } else if (r->stream_ended) {
        response_done(hc);
    } else { /* wait for the handler */
        r->out_len = r->out_off = 0;
        hc->deadline = 0;
        if (hc->watching == EV_WRITE)
            watch(hc, 0);
        if (r->handler->ops->on_drain)
            r->handler->ops->on_drain(r);
    }
}

/* ---- TLS: records in batches ----
 * A TLS record carries at most 16 KiB: the head and a memory body are
 * copied into one (a small response is one record and one write), and a
 * file goes through it record by record, read only as fast as the socket
 * takes it; the records of one wake-up go out in one send (conn_seal,
 * conn_flush). With kernel TLS the file goes with SSL_sendfile instead. */
static __thread unsigned char tls_out[16384];

/* Sealed records that wait for the socket go first: -1 (EAGAIN) while
 * they wait. */
static __attribute__((noinline)) ssize_t tls_send_mem(struct http_conn *hc, struct http_req *r,
                                                      size_t head, size_t mem)
{
    if (conn_flush(hc->c) < 0)
        return -1;
    size_t total = 0;
    while (head || mem) {
        size_t k = head < sizeof tls_out ? head : sizeof tls_out;
        size_t m = mem < sizeof tls_out - k ? mem : sizeof tls_out - k;
        if (k)
            memcpy(tls_out, r->out + r->out_off, k);
        /* 0 when head fills tls_out, which cppcheck 2.10 misses */
        /* cppcheck-suppress knownConditionTrueFalse */
        if (m)
            memcpy(tls_out + k, r->mem + r->mem_off, m);
        ssize_t n = conn_seal(hc->c, tls_out, k + m);
        if (n < 0)
            return -1;
        if (n == 0) /* the batch is full */
            break;
        size_t h = (size_t)n < head ? (size_t)n : head;
        r->out_off += h;
        r->mem_off += (size_t)n - h;
        head -= h;
        mem -= (size_t)n - h;
        total += (size_t)n;
    }
    if (conn_flush(hc->c) < 0 && errno != EAGAIN)
        return -1;
    return (ssize_t)total; /* (what did not go waits in the connection) */
}

static __attribute__((noinline)) ssize_t tls_send_file(struct http_conn *hc, struct http_req *r,
                                                       size_t want)
{
    SSL *ssl = hc->c->ssl;
    if (BIO_get_ktls_send(SSL_get_wbio(ssl))) {
        ERR_clear_error();
        ssize_t n = SSL_sendfile(ssl, r->file_fd, r->file_off, want, 0);
        if (n < 0)
            errno = SSL_get_error(ssl, (int)n) == SSL_ERROR_WANT_WRITE ? EAGAIN : EPROTO;
        if (n > 0)
            r->file_off += n;
        return n;
    }
    if (conn_flush(hc->c) < 0)
        return -1;
    size_t total = 0;
    while (total < want) {
        size_t len = want - total < sizeof tls_out ? want - total : sizeof tls_out;
        ssize_t got = pread(r->file_fd, tls_out, len, r->file_off);
        if (got <= 0) {
            if (total)
                break;
            return got;
        }
        ssize_t n = conn_seal(hc->c, tls_out, (size_t)got);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        r->file_off += n;
        total += (size_t)n;
    }
    if (conn_flush(hc->c) < 0 && errno != EAGAIN)
        return -1;
    return (ssize_t)total;
}

/* Every byte of the response is sealed; some may still wait for the
 * socket. 0 when all is out. */
static __attribute__((noinline)) int tls_unsent(struct http_conn *hc)
{
    if (conn_flush(hc->c) == 0)
        return 0;
    if (errno == EAGAIN) {
        hc->deadline = http_now_ms() + srv_of(hc)->send_timeout_ms;
        watch(hc, EV_WRITE);
    } else {
        http_conn_close(hc);
    }
    return 1;
}

static void flush(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    size_t sent_now = 0;
    for (;;) {
        int full = 0;
        size_t head = r->out_len - r->out_off, mem = r->mem_len - r->mem_off;
        ssize_t n;
        if (head || mem) {
            if (__builtin_expect(hc->tls, 0)) {
                n = tls_send_mem(hc, r, head, mem);
                full = conn_unsent(hc->c);
                goto sent;
            }
            struct iovec iov[2];
            int cnt = 0;
            if (head)
                iov[cnt++] = (struct iovec){r->out + r->out_off, head};
            if (mem)
                iov[cnt++] = (struct iovec){(void *)(r->mem + r->mem_off), mem};
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
            /* More to come: the file, or the FIN of a closing connection,
             * which close() then sends in the same segment. */
            int more = r->file_off < r->file_end ||
                       ((r->close_after || hc->stopping) && (!r->streaming || r->stream_ended));
            n = sendmsg(hc->c->fd, &mh, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
            if (n > 0) {
                size_t k = (size_t)n < head ? (size_t)n : head;
                r->out_off += k;
                r->mem_off += (size_t)n - k;
                if ((size_t)n < head + mem)
                    full = 1;
            }
        } else if (r->file_off < r->file_end) {
            if (sent_now >= SEND_SLICE) {
                hc->deadline = http_now_ms() + srv_of(hc)->send_timeout_ms;
                watch(hc, EV_WRITE); /* yield: the loop calls back at once */
                return;
            }
            off_t left = r->file_end - r->file_off;
            size_t want = left > SEND_SLICE ? SEND_SLICE : (size_t)left;
            if (__builtin_expect(hc->tls, 0)) {
                n = tls_send_file(hc, r, want);
                full = conn_unsent(hc->c);
            } else {
                n = sendfile(hc->c->fd, r->file_fd, &r->file_off, want);
                if (n > 0 && (size_t)n < want)
                    full = 1;
            }
            if (n == 0) { /* the file shrank under us */
                log_warn(hc->c->peer, "file shrank while being sent; closing");
                r->close_after = 1;
                r->file_end = r->file_off;
                conn_count_error(hc->c);
                http_conn_close(hc);
                return;
            }
        } else if (__builtin_expect(hc->tls, 0) && conn_unsent(hc->c) && tls_unsent(hc)) {
            return;
        } else if (__builtin_expect(r->streaming, 0)) {
            stream_sent(hc);
            return;
        } else {
            response_done(hc);
            return;
        }
    sent:
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* send_timeout runs between two writes (and from now, for a
                 * stream that had drained and set none) */
                if (sent_now || !hc->deadline)
                    hc->deadline = http_now_ms() + srv_of(hc)->send_timeout_ms;
                watch(hc, EV_WRITE);
                return;
            }
            if (errno == EINTR)
                continue;
            log_debug(hc->c->peer, "send: %s", strerror(errno));
            http_conn_close(hc);
            return;
        }
        sent_now += (size_t)n;
        conn_count_out(hc->c, (size_t)n);
        stat_add(&http_conn_counters(hc)->bytes_out, (uint64_t)n);
        if (full) { /* a short write means the socket buffer is full: no
                       need to hear EAGAIN from another call */
            hc->deadline = http_now_ms() + srv_of(hc)->send_timeout_ms;
            watch(hc, EV_WRITE);
            return;
        }
    }
}

void http_cork(struct http_conn *hc, int on)
{
    setsockopt(hc->c->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    hc->corked = (uint8_t)on;
}

void http_start_write(struct http_conn *hc)
{
    http_set_state(hc, HC_WRITE);
    /* A file body bigger than a socket buffer goes out in several
     * sendfile calls: cork so that each one's tail waits to fill a whole
     * segment (nginx's tcp_nopush); uncorked when the response is sent.
     * (Not over TLS: its sends are batches of whole records already, and
     * corking them cost a third more CPU per MiB in tls_bench.py.) */
    if (hc->req->file_end - hc->req->file_off > 65536 && !hc->tls)
        http_cork(hc, 1);
    flush(hc);
}
static void on_readable(struct http_conn *hc)
{
    if (hc->state == HC_LINGER) {
        char sink[16384];
        short want;
        ssize_t n = conn_read(hc->c, sink, sizeof sink, &want);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            http_conn_close(hc);
        return;
    }
    if (!hc->req && !(hc->req = req_get(hc))) {
        log_error(hc->c->peer, "out of memory for a request; closing");
        http_conn_close(hc);
        return;
    }
    struct http_req *r = hc->req;
    if (r->len == r->cap) {
        char *b = realloc(r->buf, r->cap * 2);
        if (!b) {
            log_error(hc->c->peer, "out of memory for a request; closing");
            http_conn_close(hc);
            return;
        }
        r->buf = b;
        r->cap *= 2;
    }
    short want; /* (a TLS read that waits to write, a key update's answer, gets its
                 * socket space with the next response: reading waits for input) */
    ssize_t n = conn_read(hc->c, r->buf + r->len, r->cap - r->len, &want);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            if (!r->len)
                req_put(hc);
            watch(hc, EV_READ);
            return;
        }
        log_debug(hc->c->peer, "read: %s", strerror(errno));
        http_conn_close(hc);
        return;
    }
    if (n == 0) {
        if (r->len || hc->state == HC_BODY)
            log_info(hc->c->peer, "client closed the connection mid-request");
        http_conn_close(hc);
        return;
    }
    conn_count_in(hc->c, (size_t)n);
    stat_add(&http_conn_counters(hc)->bytes_in, (uint64_t)n);
    r->len += (size_t)n;
    if (hc->state == HC_BODY)
        http_set_state(hc, HC_BODY); /* body_timeout is between reads */
    http_process(hc);
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct http_conn *hc = arg;
    hc->kicked = 0;
    if (what & EV_WRITE)
        flush(hc);
    else if (hc->state == HC_WAIT || hc->state == HC_WRITE)
        watch(hc, 0); /* input while an answer is pending waits in the socket */
    else if (what & EV_READ)
        on_readable(hc);
}

/* ---- timeouts ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_worker *hw = arg;
    uint64_t now = http_now_ms();
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &hw->conns)
    {
        struct http_conn *hc = list_entry(pos, struct http_conn, node);
        if (!hc->deadline || now < hc->deadline)
            continue;
        switch (hc->state) {
        case HC_HEAD:
        case HC_BODY:
            log_info(hc->c->peer, "request timed out while %s",
                     hc->state == HC_HEAD ? "reading the head" : "reading the body");
            http_refuse(hc, 408);
            break;
        case HC_WRITE:
            log_info(hc->c->peer, "send timed out: the client stopped reading");
            conn_count_error(hc->c);
            http_conn_close(hc);
            break;
        default: /* idle keep-alive, or a lingering close, ran out */
            http_conn_close(hc);
        }
    }
}

/* ---- the connection's life ---- */

/* What a moving idle connection carries (the blob of conn_move). */
struct http_move {
    uint64_t deadline; /* the keep-alive deadline goes on where it was */
    uint32_t nreq;
    uint8_t nodelay;
};

/* A connection for c, idle; NULL (c closed) without memory. */
static struct http_conn *conn_start(struct http_worker *hw, struct conn *c)
{
    struct http_conn *hc = calloc(1, sizeof *hc);
    if (!hc || !(hc->ctx = http_ctx_get(hw, c))) {
        if (!hc)
            log_error(c->peer, "out of memory for a connection; closed");
        free(hc);
        conn_close(c);
        return NULL;
    }
    hc->c = c;
    hc->hw = hw;
    hc->tls = c->ssl != NULL;
    c->ctx = hc;
    list_insert_head(&hw->conns, &hc->node);
    stat_add(&http_conn_counters(hc)->active, 1);
    return hc;
}

/* Off the worker: events, lists, counters, contexts. */
static void conn_end(struct http_conn *hc)
{
    req_put(hc);
    if (hc->watching || hc->kicked)
        event_del(&hc->ev);
    list_remove(&hc->node);
    stat_sub(&http_conn_counters(hc)->active, 1);
    http_ctx_put(hc->hw, hc->ctx);
    hc->c->ctx = NULL;
    free(hc);
}

static void move(struct http_conn *hc)
{
    struct conn *c = hc->c;
    struct http_move *mv = malloc(sizeof *mv);
    if (!mv) {
        log_error(c->peer, "out of memory moving a connection; closed");
        http_conn_close(hc);
        return;
    }
    *mv = (struct http_move){hc->deadline, hc->nreq, hc->nodelay};
    conn_end(hc);
    conn_move(c, mv, free);
}

void *http_worker_init(struct worker *w)
{
    struct http_worker *hw = calloc(1, sizeof *hw);
    if (!hw)
        return NULL;
    hw->w = w;
    list_init(&hw->conns);
    list_init(&hw->contexts);
    hw->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, hw);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!hw->tick || event_add(hw->tick, &tv) < 0 || !(hw->px = px_worker_new(w))) {
        if (hw->tick)
            event_free(hw->tick);
        free(hw);
        return NULL;
    }
    return hw;
}

void http_worker_dispose(void *state)
{
    struct http_worker *hw = state;
    event_free(hw->tick);
    px_worker_free(hw->px);           /* after every connection: none holds an upstream now */
    http_ctx_worker_config(hw, NULL); /* every connection is gone: so are the contexts */
    for (size_t i = 0; i < sizeof hw->errpages / sizeof *hw->errpages; i++)
        sb_free(&hw->errpages[i]);
    while (hw->pool) {
        struct http_req *r = hw->pool;
        hw->pool = r->next_free;
        free(r->buf);
        free(r->out);
        free(r->hdrs);
        free(r);
    }
    free(hw);
}

void http_worker_config(void *state, struct config *cfg)
{
    http_ctx_worker_config(state, cfg);
}

void http_message(void *state, struct msg *m)
{
    struct http_worker *hw = state;
    px_worker_message(hw->px, m);
}

void http_accept(void *state, struct conn *c)
{
    struct http_conn *hc = conn_start(state, c);
    if (!hc)
        return;
    stat_add(&http_conn_counters(hc)->accepted, 1);
    hc->nodelay = hc->tls; /* the core set it for TLS */
    http_set_state(hc, HC_IDLE);
    /* The listener defers accept until the request is there: read it now,
     * and register with epoll only if we have to wait (a request answered
     * with Connection: close then never touches epoll). */
    on_readable(hc);
}

void http_adopt(void *state, struct conn *c, void *blob)
{
    struct http_move *mv = blob;
    struct http_conn *hc = conn_start(state, c);
    if (hc) {
        hc->nreq = mv->nreq;
        hc->nodelay = mv->nodelay;
        hc->state = HC_IDLE;
        hc->deadline = mv->deadline;
        watch(hc, EV_READ); /* a request sent meanwhile waits in the socket */
    }
    free(mv);
}

void http_closed(void *state, struct conn *c)
{
    (void)state;
    struct http_conn *hc = c->ctx;
    if (!hc)
        return;
    if (hc->req && hc->req->status == 0 && hc->req->len)
        stat_add(&http_conn_counters(hc)->status[0], 1);
    conn_end(hc);
}

void http_drain(void *state, struct conn *c, unsigned grace_ms, int moving)
{
    (void)state;
    (void)grace_ms;
    struct http_conn *hc = c->ctx;
    if (!hc)
        return;
    int idle = hc->state == HC_IDLE && !hc->req;
    if (moving) {
        hc->moving = 1;
        if (idle)
            move(hc);
        return;
    }
    hc->moving = 0;
    hc->stopping = 1; /* the next answer says Connection: close */
    /* Closing an idle keep-alive connection races with a request the client
     * may be sending on it; when the whole server stops, that is the price
     * of stopping promptly (nginx pays it too). */
    if (idle)
        http_conn_close(hc);
}

void http_describe(void *state, struct conn *c, char *buf, size_t len)
{
    (void)state;
    const struct http_conn *hc = c->ctx;
    if (!hc)
        return;
    const struct http_req *r = hc->req;
    static const char *const states[] = {"idle",    "reading head", "reading body", "sending",
                                         "closing", "waiting",      "tunnel"};
    if (r && r->target.p)
        snprintf(buf, len, "%s %s %.*s (request %u)", states[hc->state], http_method_name(r),
                 (int)(r->target.len > 96 ? 96 : r->target.len), r->target.p, hc->nreq + 1);
    else
        snprintf(buf, len, "%s (%u request%s)", states[hc->state], hc->nreq,
                 hc->nreq == 1 ? "" : "s");
}
