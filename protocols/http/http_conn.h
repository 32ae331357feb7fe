/*
 * Inside the HTTP module: what its files share. Worker thread only.
 *
 *   http.c          configuration, the module table, counters, the console command
 *   http_conn.c     connections: socket I/O, states and timeouts, the
 *                   request pool, moving idle connections between workers
 *   http_parse.c    llhttp glue: reading a request, limits, smuggling checks
 *   http_response.c the response API handlers call (http.h)
 *   http_log.c      the access log
 *   http_context.c  per-worker handler contexts
 *   http_router.c   the request head, virtual hosts and the handler chain
 *
 * Memory. An idle keep-alive connection is a struct conn, a struct
 * http_conn and its event: no buffers. A request (struct http_req: parser,
 * input and output buffers) is taken from a small per-worker pool when bytes
 * arrive and given back when its response is sent and nothing more is
 * buffered.
 */
#pragma once

#include "core/list.h"
#include "core/sbuf.h"
#include "protocols/http/http.h"
#include "protocols/http/http_util.h"

#include <event2/event_struct.h>
#include <time.h>

struct conn;
struct worker;

/* HC_WAIT: an HTTP_ASYNC handler has the request and nothing is read;
 * HC_TUNNEL: the socket is the handler's (http_tunnel). Neither has a
 * deadline of the connection's: the handler keeps its own. */
enum hc_state { HC_IDLE, HC_HEAD, HC_BODY, HC_WRITE, HC_LINGER, HC_WAIT, HC_TUNNEL };

struct px_worker;

struct http_worker {
    struct worker *w;
    struct px_worker *px; /* the reverse proxy's pools (proxy/pool.c) */
    struct event *tick;
    struct list conns;    /* struct http_conn */
    struct list contexts; /* struct http_ctx */
    struct http_req *pool;
    unsigned npool;
    time_t date_sec;
    time_t access_warned; /* last second a failing access log was reported */
    char date_hdr[sizeof "Date: \r\n" + HTTP_DATE_LEN];
    char log_time[40];         /* 27/Nov/2026:16:42:25 +0000 */
    struct sbuf errpages[500]; /* statuses 100..599 */
};

/* Every idle connection is one of these: packed so that the event starts
 * at 64 bytes. */
struct http_conn {
    struct list node; /* the worker's HTTP connections */
    struct conn *c;
    struct http_worker *hw;
    struct http_ctx *ctx; /* the handler contexts of c's snapshot (a reference) */
    struct http_req *req; /* NULL while idle */
    uint64_t deadline;    /* monotonic ms; 0: none */
    uint32_t nreq;        /* requests answered */
    short watching;       /* EV_READ or EV_WRITE */
    uint8_t state;
    uint8_t stopping : 1; /* the server stops: the next answer closes */
    uint8_t moving : 1;   /* the worker leaves: move once idle */
    uint8_t nodelay : 1;
    uint8_t corked : 1;
    uint8_t kicked : 1; /* ev is activated (not added) to flush from the loop */
    uint8_t tls : 1;    /* c->ssl is set (kept here: the hot paths test it) */
    struct event ev;
};

/* http_conn.c: the module's worker hooks (core/module.h) */
void *http_worker_init(struct worker *w);
void http_worker_dispose(void *state);
void http_worker_config(void *state, struct config *cfg);
void http_accept(void *state, struct conn *c);
void http_adopt(void *state, struct conn *c, void *blob);
void http_closed(void *state, struct conn *c);
void http_drain(void *state, struct conn *c, unsigned grace_ms, int moving);
void http_describe(void *state, struct conn *c, char *buf, size_t len);
void http_message(void *state, struct msg *m);
/* http_conn.c: for the other files */
uint64_t http_now_ms(void);
struct http_counters *http_conn_counters(const struct http_conn *hc);
void http_conn_close(struct http_conn *hc);
void http_set_state(struct http_conn *hc, enum hc_state st);
void http_watch(struct http_conn *hc, short what);
/* The response is set: send it, then read the next request or close. */
void http_start_write(struct http_conn *hc);
void http_req_abort_body(struct http_req *r);
void http_cork(struct http_conn *hc, int on);
/* HTTP_ASYNC: the response (or more of a stream) is ready: send it from
 * the loop, not from inside the caller. */
void http_kick(struct http_conn *hc);

/* http_parse.c */
extern const llhttp_settings_t http_parser_settings;
/* Feeds what is buffered to the parser and acts on what it finds. */
void http_process(struct http_conn *hc);
/* Answers a request that failed while being read, and closes after. */
void http_refuse(struct http_conn *hc, int status);

/* http_response.c */
void http_update_clock(struct http_worker *hw);
/* Releases what a response holds (file, memory) and forgets it. */
void http_resp_forget(struct http_req *r);

/* http_log.c: one line for r; only for a server with an access log */
void http_access_log(struct http_conn *hc, struct http_req *r);

/* http_context.c: a server's handler contexts on one worker. */
struct http_ctx;
/* A reference for a connection under c's snapshot; NULL (logged) when a
 * handler cannot make its context. */
struct http_ctx *http_ctx_get(struct http_worker *hw, const struct conn *c);
void http_ctx_put(struct http_worker *hw, struct http_ctx *x);
/* The worker serves a new snapshot: contexts of older ones go once no
 * connection holds them. */
void http_ctx_worker_config(struct http_worker *hw, const struct config *cfg);
void *http_ctx_handler(const struct http_ctx *x, const struct http_handler *h);

/* http_router.c: parses the head's target and known headers, picks the
 * virtual host and runs the handler chain. Afterwards either a response is
 * set, or r->body_taken says the handler wants the body (r->body_max
 * bytes at most). */
void http_route(struct http_req *r);
