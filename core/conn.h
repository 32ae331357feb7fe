/*
 * A client connection, owned by one worker at a time: the worker that
 * accepted it, or the one it moved to when its worker left (conn_move).
 * The core makes the bufferevent, counts bytes, keeps the worker's list
 * and limits, closes, and carries a session between workers; the module
 * owns c->ctx and everything the session says. Worker thread only.
 */
#pragma once

#include "core/list.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct config;
struct service;
struct ssl_st;
struct worker;

struct conn {
    struct list node; /* the worker's connections */
    uint64_t id;      /* unique in the process; kept when the session moves */
    struct worker *w;
    struct config *cfg;        /* snapshot it was accepted under (a reference) */
    const struct service *svc; /* in cfg */
    struct bufferevent *bev;   /* NULL for MODULE_RAW_IO modules */
    /* TLS (the bufferevent's, for bufferevent modules), or NULL. What TLS
     * needs besides (the handshake's timer, records waiting for the
     * socket) hangs on the SSL (conn_tls.c), not here: a plain idle
     * connection stays as small as it was. */
    struct ssl_st *ssl;
    void *ctx; /* the module's per-connection state */
    uint64_t bytes_in, bytes_out;
    struct timeval started;
    time_t last_active; /* seconds (wall clock, the loop's cached time) */
    int fd;
    unsigned closing : 2;     /* 1: flushing before close, 2: closed */
    unsigned proxied : 1;     /* peer is the client a PROXY header named, not the TCP peer */
    unsigned handed : 1;      /* the module has it (after the TLS handshake, if any) */
    unsigned tls_starved : 1; /* the last conn_read wanted more from the socket */
    unsigned ip_counted : 1;  /* counts against its service's max_conns_per_ip */
    char peer[64];
};

/* Closes now: the module's closed() runs first, then everything is freed. */
void conn_close(struct conn *c);
/* Stops reading, sends what is queued, then closes; gives up after
 * timeout_ms if the peer does not read. */
void conn_close_after_flush(struct conn *c, unsigned timeout_ms);
/* A protocol error or a socket error: counted in the worker's stats. */
void conn_count_error(struct conn *c);
/* The client's address: the one a PROXY header named (proxy_protocol
 * listeners), else the socket's peer. 0, or -1 (Unix sockets, errors). */
int conn_peer_addr(const struct conn *c, struct sockaddr_storage *ss, socklen_t *len);
/* The peer's address as text without the port ("10.0.0.1", "::1", or
 * "unix:..."), the real client's behind a PROXY header; returns its length. */
size_t conn_peer_host(const struct conn *c, char *out, size_t len);
/* Line-based protocols (chat, FTP) on a bufferevent's input: the next line
 * ended by CRLF or LF, of at most max bytes.
 *   CONN_LINE_OK: the line is the first *len bytes of in; drain *skip
 *     bytes (line and end) once it is used.
 *   CONN_LINE_TOO_LONG: a line longer than max began; what has come of it
 *     is dropped, and so will the rest be (*discarding remembers across
 *     reads). Reported once per line: refuse it, then ask again.
 *   CONN_LINE_NONE: no whole line yet. */
enum conn_line { CONN_LINE_NONE, CONN_LINE_OK, CONN_LINE_TOO_LONG };
enum conn_line conn_next_line(struct evbuffer *in, size_t max, unsigned *discarding, size_t *len,
                              size_t *skip);
/* I/O for MODULE_RAW_IO modules, plain or TLS alike, with the contract of
 * read(2) and send(2) (never SIGPIPE): n > 0; 0 at the end of the stream
 * (read); -1 with errno, EAGAIN meaning "call again when *want (EV_READ or
 * EV_WRITE) is ready". Bytes are not counted: conn_count_in/out. */
static inline ssize_t conn_read(struct conn *c, void *buf, size_t len, short *want);
static inline ssize_t conn_write(struct conn *c, const void *buf, size_t len, short *want);
/* STARTTLS for bufferevent modules (FTP's AUTH TLS): what is queued for
 * the client (the reply that says "go ahead") is sent now, input the
 * client sent before its handshake is dropped (plain text must not pass
 * as protected, RFC 4217 and the STARTTLS injection attacks), and c->bev
 * becomes a TLS bufferevent in the accepting state, with no callbacks and
 * reading off. The module then sets its callbacks: BEV_EVENT_CONNECTED
 * means the handshake is done (tls_count_done), an error before it that it
 * failed (tls_count_failed). 0, or -1 (c must be closed). */
int conn_starttls(struct conn *c);
/* Sending much (raw I/O modules): conn_seal seals up to 16 KiB into a
 * record added to this thread's batch, returning what it took, or 0 when
 * the batch is full; conn_flush sends the batch (and what waited from
 * before). 0: all sent; -1 with errno EAGAIN: the rest waits in c and goes
 * first next time (wait for EV_WRITE, then conn_flush again), or another
 * errno. Always conn_flush before going back to the loop: the batch is the
 * thread's. On a plain connection conn_seal is conn_write. */
ssize_t conn_seal(struct conn *c, const void *buf, size_t len);
int conn_flush(struct conn *c);
/* Sealed bytes wait for the socket (conn_flush has more to send). */
int conn_unsent(const struct conn *c);
/* Ends our direction: a TLS close_notify, then the TCP FIN; reading goes
 * on. */
void conn_shutdown_write(struct conn *c);
/* Bytes TLS has read from the socket and not yet given out: the socket
 * will not say it is readable for them. 0 for plain connections. */
int conn_pending(const struct conn *c);
/* Whether conn_move can carry the session (a TLS bufferevent cannot
 * leave its loop: such sessions finish where they are). */
int conn_movable(const struct conn *c);
/* Byte accounting for MODULE_RAW_IO modules (bufferevents count their own). */
void conn_count_in(struct conn *c, size_t n);
void conn_count_out(struct conn *c, size_t n);

/* Gives the session to another worker (only for modules with adopt(), and
 * only while the worker drains). Call it once the module has released its
 * own per-connection state, events included, and set c->ctx to NULL; blob
 * is the module's description of the session, given to adopt() on the
 * receiving worker, and blob_free frees it should the move fail (on any
 * thread). The bufferevent's unread input and unsent output travel with
 * the descriptor. Afterwards c is gone: moved, or closed if the move could
 * not be made. */
void conn_move(struct conn *c, void *blob, void (*blob_free)(void *));

/* (conn_tls.c: the TLS side of conn_read and conn_write) */
ssize_t conn_tls_read(struct conn *c, void *buf, size_t len, short *want);
ssize_t conn_tls_write(struct conn *c, const void *buf, size_t len, short *want);

static inline ssize_t conn_read(struct conn *c, void *buf, size_t len, short *want)
{
    if (__builtin_expect(c->ssl != NULL, 0))
        return conn_tls_read(c, buf, len, want);
    *want = EV_READ;
    return read(c->fd, buf, len);
}

static inline ssize_t conn_write(struct conn *c, const void *buf, size_t len, short *want)
{
    if (__builtin_expect(c->ssl != NULL, 0))
        return conn_tls_write(c, buf, len, want);
    *want = EV_WRITE;
    return send(c->fd, buf, len, MSG_NOSIGNAL);
}

/* ---- for the core ---- */

/* What travels in MSG_CONN_MOVE; owned by the message. */
struct conn_move;
void conn_move_free(void *p);
/* The supervisor's view of a move, to say where it goes. */
uint64_t conn_move_id(const struct conn_move *mv);

/* worker.c: wraps a descriptor accepted under cfg (svc is in it), on a
 * TLS listener if tls; NULL (fd closed) on failure. */
struct conn *conn_new(struct worker *w, struct config *cfg, const struct service *svc, int fd,
                      const char *peer, int tls);
/* worker.c: makes the TLS handshake of a conn_new(.., tls) connection,
 * then calls worker_conn_ready(c), or closes c if it fails or times out. */
void conn_tls_accept(struct conn *c);
/* conn.c, from conn_tls.c: a raw module's SSL gets the batching BIO, bound
 * to c (accepted, or adopted after a move; 0, or -1 without memory); on
 * close, the handshake, the SSL (polite: with a close_notify) and what
 * waited are released. */
int conn_tls_raw_setup(struct conn *c);
/* worker.c: the thread ends (its batch buffer goes). */
void conn_tls_thread_end(void);
void conn_tls_release(struct conn *c, int polite);
/* worker.c: takes a moved session (mv is consumed) and hands it to its
 * module's adopt(). */
void conn_adopt(struct worker *w, struct conn_move *mv);
