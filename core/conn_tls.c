/*
 * TLS on a connection: the handshake the core makes before a module has
 * the connection, and I/O for MODULE_RAW_IO modules (HTTP). Worker thread.
 *
 * Sending in batches. A TLS record carries at most 16 KiB; writing each
 * one with its own send(2) costs a system call and a trip through TCP per
 * record. A raw module's SSL writes through a BIO of ours instead of the
 * socket BIO: normally it sends at once, as the socket BIO would, but
 * between conn_seal calls it appends each sealed record to a per-thread
 * batch buffer, which conn_flush sends in one call. What the socket does
 * not take waits beside the SSL (allocated only then, freed once sent) and
 * goes out before anything else; so a slow client costs memory only for
 * as long as it is slow, and an idle connection none. The SSL never sees
 * the socket full while sealing, so its retry rules do not apply there.
 * (With kernel TLS the socket BIO stays: the kernel seals.)
 */
#include "core/conn.h"

#include "core/config.h"
#include "core/log.h"
#include "core/module.h"
#include "core/tls.h"
#include "core/worker.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* What a connection's TLS needs besides the SSL hangs on it (ex_data), so
 * struct conn carries one pointer for TLS. */
static int hs_idx = -1, wait_idx = -1;
static BIO_METHOD *wbio_method;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static void make_once(void);

static struct tls_hs *hs_of(const struct conn *c)
{
    return SSL_get_ex_data(c->ssl, hs_idx);
}

static struct tls_wait *wait_of(const struct conn *c)
{
    return SSL_get_ex_data(c->ssl, wait_idx);
}

/* ---- the TLS handshake, before the module has the connection ---- */

struct tls_hs {
    struct event ev; /* raw I/O: the socket; bufferevents: a timer */
    struct timespec deadline;
};

static void hs_end(struct conn *c)
{
    struct tls_hs *hs = hs_of(c);
    event_del(&hs->ev);
    free(hs);
    SSL_set_ex_data(c->ssl, hs_idx, NULL);
}

/* One deadline for the whole handshake: a client that sends a byte at a
 * time does not get a new timeout per byte. */
static struct timeval hs_left(const struct tls_hs *hs)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long us = (long long)(hs->deadline.tv_sec - now.tv_sec) * 1000000 +
                   (hs->deadline.tv_nsec - now.tv_nsec) / 1000;
    if (us < 1)
        us = 1;
    return (struct timeval){(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
}

static void hs_timed_out(struct conn *c)
{
    char why[80];
    snprintf(why, sizeof why, "no handshake within %u ms", tls_handshake_timeout_ms(c->svc->tls));
    tls_count_failed(c->ssl, c->peer, why);
    conn_close(c);
}

static void hs_ready(struct conn *c)
{
    hs_end(c);
    worker_conn_ready(c);
}

static void hs_raw_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (what & EV_TIMEOUT) {
        hs_timed_out(c);
        return;
    }
    short want = 0;
    int r = tls_handshake(c->ssl, c->peer, &want);
    if (r < 0) {
        conn_close(c);
    } else if (r == 0) {
        struct tls_hs *hs = hs_of(c);
        struct timeval tv = hs_left(hs);
        event_del(&hs->ev);
        event_assign(&hs->ev, c->w->base, fd, want, hs_raw_cb, c);
        event_add(&hs->ev, &tv);
    } else {
        hs_ready(c);
    }
}

static void hs_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hs_timed_out(arg);
}

static void hs_bev_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        tls_count_done(c->ssl);
        /* the module's accept() gets it with reading off; what came with
         * the end of the handshake waits in the input (worker_conn_ready
         * lets the module hear of it) */
        bufferevent_disable(bev, EV_READ);
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
        hs_ready(c);
        return;
    }
    unsigned long e = bufferevent_get_openssl_error(bev);
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    tls_count_failed(c->ssl, c->peer,
                     why                      ? why
                     : (what & BEV_EVENT_EOF) ? "the client closed"
                                              : strerror(errno));
    conn_close(c);
}

void conn_tls_accept(struct conn *c)
{
    pthread_once(&once, make_once);
    struct tls_hs *hs = hs_idx >= 0 ? calloc(1, sizeof *hs) : NULL;
    if (!hs || !SSL_set_ex_data(c->ssl, hs_idx, hs)) {
        free(hs);
        log_error(c->peer, "out of memory for a TLS handshake; closed");
        conn_close(c);
        return;
    }
    unsigned ms = tls_handshake_timeout_ms(c->svc->tls);
    clock_gettime(CLOCK_MONOTONIC, &hs->deadline);
    hs->deadline.tv_sec += ms / 1000;
    hs->deadline.tv_nsec += (long)(ms % 1000) * 1000000;
    if (hs->deadline.tv_nsec >= 1000000000) {
        hs->deadline.tv_sec++;
        hs->deadline.tv_nsec -= 1000000000;
    }
    if (c->bev) {
        struct timeval tv = hs_left(hs);
        evtimer_assign(&hs->ev, c->w->base, hs_timer_cb, c);
        evtimer_add(&hs->ev, &tv);
        bufferevent_setcb(c->bev, NULL, NULL, hs_bev_cb, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        return;
    }
    /* Clients speak first (TCP_DEFER_ACCEPT): the hello is usually here. */
    event_assign(&hs->ev, c->w->base, c->fd, EV_READ, hs_raw_cb, c);
    hs_raw_cb(c->fd, EV_READ, c);
}

ssize_t conn_tls_read(struct conn *c, void *buf, size_t len, short *want)
{
    ssize_t n = tls_read(c->ssl, buf, len, want);
    c->tls_starved = n < 0 && errno == EAGAIN;
    return n;
}

ssize_t conn_tls_write(struct conn *c, const void *buf, size_t len, short *want)
{
    return tls_write(c->ssl, buf, len, want);
}

void conn_shutdown_write(struct conn *c)
{
    if (c->ssl && !c->bev && SSL_is_init_finished(c->ssl))
        SSL_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
}

/* With read-ahead, the SSL may hold whole records not yet opened, which
 * SSL_pending does not count, or the start of one, which the socket will
 * complete: SSL_has_pending says "something", and the last read says
 * whether it was enough. */
int conn_pending(const struct conn *c)
{
    return c->ssl && !c->bev && !c->tls_starved && SSL_has_pending(c->ssl);
}

int conn_movable(const struct conn *c)
{
    return !(c->ssl && c->bev);
}

/* ---- sending in batches (raw I/O modules) ---- */

#define BATCH_CAP (80u << 10)
#define RECORD_MAX (16384u + 512u) /* a full record with its header and tag */

struct batch {
    struct conn *owner; /* whose records are in buf (set while sealing) */
    int sealing;
    size_t len;
    unsigned char buf[BATCH_CAP];
};

struct tls_wait {
    size_t len, off;
    unsigned char data[];
};

static __thread struct batch *batch;

static struct batch *batch_get(void)
{
    if (!batch)
        batch = calloc(1, sizeof *batch);
    return batch;
}

/* What waits from an earlier flush goes first. 0 when nothing waits. */
static int send_waiting(struct conn *c)
{
    struct tls_wait *tw = wait_of(c);
    while (tw) {
        ssize_t n = send(c->fd, tw->data + tw->off, tw->len - tw->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        tw->off += (size_t)n;
        if (tw->off == tw->len) {
            free(tw);
            SSL_set_ex_data(c->ssl, wait_idx, NULL);
            tw = NULL;
        }
    }
    return 0;
}

static int wbio_write(BIO *b, const char *data, int len)
{
    struct conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    struct batch *g = batch;
    if (g && g->sealing && g->owner == c && g->len + (size_t)len <= BATCH_CAP) {
        memcpy(g->buf + g->len, data, (size_t)len);
        g->len += (size_t)len;
        return len;
    }
    if (send_waiting(c) < 0) {
        if (errno == EAGAIN)
            BIO_set_retry_write(b);
        return -1;
    }
    ssize_t n;
    do
        n = send(c->fd, data, (size_t)len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        BIO_set_retry_write(b);
    return (int)n;
}

static long wbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void make_once(void)
{
    hs_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    wait_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "medusa");
    if (m && BIO_meth_set_write(m, wbio_write) && BIO_meth_set_ctrl(m, wbio_ctrl))
        wbio_method = m;
    else
        BIO_meth_free(m);
}

/* A raw module's TLS connection writes through our BIO (not with kTLS). */
int conn_tls_raw_setup(struct conn *c)
{
    if (tls_ktls_available())
        return 0;
    pthread_once(&once, make_once);
    BIO *b = wbio_method && wait_idx >= 0 ? BIO_new(wbio_method) : NULL;
    if (!b)
        return -1;
    BIO_set_data(b, c);
    BIO_set_init(b, 1);
    SSL_set0_wbio(c->ssl, b);
    return 0;
}

ssize_t conn_seal(struct conn *c, const void *buf, size_t len)
{
    if (!c->ssl || BIO_get_data(SSL_get_wbio(c->ssl)) != c) { /* plain, or kTLS */
        short want;
        return conn_write(c, buf, len, &want);
    }
    struct batch *g = batch_get();
    if (!g) {
        errno = ENOMEM;
        return -1;
    }
    if (g->len && g->owner != c) { /* cannot happen: every batch is flushed before the loop */
        errno = EINVAL;
        return -1;
    }
    if (len > 16384)
        len = 16384;
    if (g->len + len + 512 > BATCH_CAP)
        return 0;
    g->owner = c;
    g->sealing = 1;
    ERR_clear_error();
    int r = SSL_write(c->ssl, buf, (int)len);
    g->sealing = 0;
    if (r > 0)
        return r;
    log_debug(c->peer, "TLS write: %s", tls_error_text("error"));
    g->len = 0; /* the connection ends: its records go nowhere */
    g->owner = NULL;
    errno = EPROTO;
    return -1;
}

int conn_flush(struct conn *c)
{
    if (send_waiting(c) < 0)
        return -1;
    struct batch *g = batch;
    if (!g || !g->len || g->owner != c)
        return 0;
    size_t off = 0;
    while (off < g->len) {
        ssize_t n = send(c->fd, g->buf + off, g->len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN) {
            g->len = 0;
            return -1;
        }
        if (n < 0)
            break;
        off += (size_t)n;
    }
    size_t rest = g->len - off;
    g->len = 0;
    if (!rest)
        return 0;
    struct tls_wait *tw = malloc(sizeof *tw + rest);
    if (!tw) {
        errno = ENOMEM;
        return -1;
    }
    tw->len = rest;
    tw->off = 0;
    memcpy(tw->data, g->buf + off, rest);
    if (!SSL_set_ex_data(c->ssl, wait_idx, tw)) {
        free(tw);
        errno = ENOMEM;
        return -1;
    }
    errno = EAGAIN;
    return -1;
}

int conn_unsent(const struct conn *c)
{
    return c->ssl && wait_idx >= 0 && wait_of(c) != NULL;
}

void conn_tls_thread_end(void)
{
    free(batch);
    batch = NULL;
}

void conn_tls_release(struct conn *c, int polite)
{
    pthread_once(&once, make_once);
    if (batch && batch->owner == c) { /* (a struct at the same address later is another) */
        batch->len = 0;
        batch->owner = NULL;
    }
    if (hs_idx >= 0 && hs_of(c))
        hs_end(c);
    struct tls_wait *tw = wait_idx >= 0 ? wait_of(c) : NULL;
    if (tw) {
        free(tw);
        SSL_set_ex_data(c->ssl, wait_idx, NULL);
    }
    if (!c->bev) { /* (a bufferevent frees its own) */
        if (polite && !tw && SSL_is_init_finished(c->ssl))
            SSL_shutdown(c->ssl); /* a close_notify, if the socket takes it */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
}
