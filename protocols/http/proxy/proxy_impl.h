/*
 * Inside the proxy: what pool.c and proxy.c share. Worker thread only.
 *
 * A request being proxied is a struct px_req (the http_req's hstate). It
 * gets an upstream connection (struct px_uconn) from its server's pool or
 * a new one, writes the re-framed request head and body to it, parses the
 * response with llhttp and streams it to the client. The connection goes
 * back to the pool when the response ended cleanly.
 */
#pragma once

#include "core/list.h"
#include "core/sbuf.h"
#include "protocols/http/proxy/upstream.h"

#include <event2/event_struct.h>
#include <llhttp.h>
#include <stdint.h>

struct evdns_base;
struct http_req;
struct px_req;

#define PX_DOWN_FOREVER UINT64_MAX

/* One server, on one worker. */
struct px_wsrv {
    struct px_rec *rec;
    struct px_slot *slot; /* this worker's figures for it */
    struct list idle;     /* struct px_uconn, most recently used first */
    struct list waiters;  /* struct px_req waiting for its name to resolve */
    unsigned nidle, nactive;
    unsigned fails;      /* consecutive */
    uint64_t down_until; /* monotonic ms */
    uint8_t disabled;
    int cur_weight; /* smooth weighted round-robin (nginx's) */
    /* A DNS name: its addresses, re-resolved at their TTL. */
    char *host, *resolver;
    uint16_t port;
    struct sockaddr_storage *addrs;
    unsigned naddrs, next_addr;
    uint64_t dns_expiry;
    uint8_t resolving;
};

struct px_worker {
    struct worker *w;
    struct px_wsrv **srv; /* by record id; made when first needed */
    unsigned nsrv;
    struct event *tick;
    unsigned ticks;
    struct list reqs; /* struct px_req with an upstream deadline */
    struct px_req *free_reqs;
    unsigned nfree;
    struct px_dns dns;
    unsigned lc_start; /* least-connections: where ties start */
};

struct px_uconn {
    struct list node; /* in its server's idle list */
    struct px_worker *pw;
    struct px_wsrv *ws;
    struct px_req *pr; /* the request it serves; NULL when idle */
    int fd;
    short watching;
    uint8_t connecting;
    uint8_t reused; /* it served a request before: a failure may be staleness */
    unsigned nreq;
    uint64_t idle_until;
    char addr[56]; /* the address, for logs and the access log */
    struct event ev;
};

enum px_phase {
    PXP_CONNECT, /* choosing a server, resolving or connecting */
    PXP_SEND,    /* writing the request */
    PXP_WAIT,    /* the request is sent: waiting for the response head */
    PXP_BODY,    /* streaming the response body */
    PXP_TUNNEL,
};

#define PX_MAX_HDRS 128

struct px_hdr {
    uint32_t name, name_len, value, value_len; /* offsets into in */
};

struct px_req {
    struct list node;      /* in the worker's reqs while it has a deadline */
    struct list wait_node; /* in a server's waiters while its name resolves */
    struct px_req *next_free;
    struct px_worker *pw;
    struct http_req *r;
    const struct px_handler *ph;
    const struct px_upstream *up;
    struct px_uconn *uc;
    int server;     /* index in up->servers of the one in use */
    uint64_t tried; /* servers tried, by index (the first 64) */
    unsigned ntries;
    uint64_t deadline, started_ms;
    uint8_t phase;
    uint8_t in_list;
    uint8_t body_chunked; /* the request body goes upstream chunked */
    uint8_t body_end;     /* all of the request body is queued */
    uint8_t replayable;   /* out still holds everything sent so far */
    uint8_t idempotent;
    uint8_t upgrade;      /* a WebSocket (or other) upgrade was asked for */
    uint8_t got_response; /* a response byte arrived */
    uint8_t head_done;    /* the response head went to the client */
    uint8_t skip_1xx;     /* an interim response is being skipped */
    uint8_t read_paused;  /* the client's socket is full */
    uint8_t in_parser;    /* inside llhttp_execute: no freeing */
    uint8_t resp_done;
    uint8_t waiting;  /* for DNS */
    uint8_t sent_any; /* a byte of the request reached an upstream socket */
    uint8_t call;     /* PXC_*: where a failure is answered */
    int fail_status;  /* a failure inside on_req or on_body */
    struct sbuf out;  /* bytes for the upstream */
    size_t out_off;
    /* the response */
    llhttp_t parser;
    char *in;
    size_t in_len, in_cap;
    struct px_hdr hdrs[PX_MAX_HDRS];
    unsigned nhdrs;
    int in_value;
    uint32_t reason, reason_len;
    /* a tunnel: the client side's event and buffer (upstream -> client
     * uses in) */
    int cfd;
    short cwatching;
    uint8_t c_eof, u_eof;
    struct event cev;
};

#define PXC_ASYNC 0 /* from the loop: answer now */
#define PXC_REQ 1   /* inside on_req: it answers (HTTP_DONE) */
#define PXC_BODY 2  /* inside on_body: it returns the status */

/* pool.c */
uint64_t px_now_ms(void);
struct px_wsrv *px_wsrv_get(struct px_worker *pw, const struct px_server *s);
/* Picks a server not tried yet and gets a connection to it (pooled, or
 * connecting). 0: pr->uc is set (uc->connecting says which); 1: waiting
 * for DNS (px_proceed follows); -1: no server left (*err says why). */
int px_connect(struct px_req *pr, enum px_err *err);
/* The same for one server (after a stale pooled connection, or DNS). */
int px_connect_server(struct px_req *pr, int i, enum px_err *err);
/* The request is done with its upstream connection: pool it (reusable)
 * or close it. */
void px_release(struct px_req *pr, int reusable);
void px_uconn_watch(struct px_uconn *uc, short what);
void px_deadline(struct px_req *pr, unsigned ms);
void px_no_deadline(struct px_req *pr);
struct px_req *px_req_get(struct px_worker *pw);
void px_req_put(struct px_req *pr);
struct px_worker *px_worker_of(const struct http_req *r);

/* proxy.c: called by pool.c */
void px_io(struct px_uconn *uc, short what);
void px_timeout(struct px_req *pr);
/* A DNS answer (or failure) came for the name pr waited on. */
void px_proceed(struct px_req *pr);
