/*
 * The HTTP/1.1 server: configuration, the request every handler sees, and
 * the response calls handlers make.
 *
 * Model (Medusa's, h2o's): a server has virtual hosts chosen by Host; each
 * has an ordered chain of handlers, each matching a path prefix and
 * optionally a set of methods. The first that matches handles the request;
 * a handler may also pass it on (auth does, once the user is known).
 * Handlers know nothing of each other and never touch the socket: they fill
 * in the response and http_conn.c sends it.
 *
 * Everything here runs on the worker that owns the connection, except
 * parsing (supervisor, or main for -t) and freeing (whichever thread drops
 * the last configuration reference). The configuration is immutable: a
 * handler that keeps state per worker (a cache, a compiled pattern) asks
 * for a context (ctx_init), which the worker makes and disposes of itself.
 */
#pragma once

#include "core/bus.h"
#include "core/config.h"
#include "core/module.h"

#include <llhttp.h>
#include <stdint.h>
#include <sys/types.h>

struct conn;
struct worker;
struct http_conn;
struct http_req;
struct http_handler;
struct mime_table;

enum http_handler_type {
    HT_STATIC,
    HT_REDIRECT,
    HT_AUTH,
    HT_PUT,
    HT_STATUS,
    HT_USERDIR,
    HT_PROXY,
    HT_COUNT
};

/* What a handler did with a request. */
enum http_action {
    HTTP_DONE, /* the response is set */
    HTTP_NEXT, /* not mine after all: try the next handler */
    HTTP_BODY, /* I take the body: on_body for each piece, then on_body_end */
    /* I answer later (an upstream, a timer): the body, if any, comes as for
     * HTTP_BODY, then the connection waits, reading nothing more, until the
     * handler calls http_resume() or streams (http_stream_*). Until then the
     * handler holds the request: if the connection ends first (client gone,
     * timeout, server stop), on_abort tells it to let go. */
    HTTP_ASYNC,
};

struct http_handler_ops {
    const char *type;
    const char *const *keys; /* keys besides type, path, methods */
    int (*parse)(struct cfg_ctx *ctx, const config_setting_t *block, struct http_handler *h);
    void (*free)(struct http_handler *h);
    /* Optional; the default is a plain string prefix match on the path. */
    int (*match)(const struct http_handler *h, const char *path);
    enum http_action (*on_req)(struct http_handler *h, struct http_req *r);
    /* For HTTP_BODY: returns 0, or an HTTP status to fail the request with. */
    int (*on_body)(struct http_req *r, const char *data, size_t len);
    void (*on_body_end)(struct http_req *r);
    /* The request ended without on_body_end (error, timeout, disconnect), or
     * the connection ends while an HTTP_ASYNC handler still holds it (it
     * must release what it has and touch the request no more). */
    void (*on_abort)(struct http_req *r);
    /* HTTP_ASYNC streams: what was queued with http_stream_write has gone
     * out to the client; the handler may produce more. */
    void (*on_drain)(struct http_req *r);
    /* http_tunnel(): the 101 head is sent and the connection's socket is
     * the handler's (see there), read and written with conn_read/conn_write
     * (TLS or not); pending holds what the client sent after its request. */
    void (*on_tunnel)(struct http_req *r, struct conn *c, const char *pending, size_t len);
    /* Per-worker state (h2o's on_context_init/dispose). A worker makes one
     * context per handler for each configuration snapshot it serves, the
     * first time it serves a connection under it, and disposes of it on
     * the same worker once neither the worker nor any connection uses that
     * snapshot. ctx_init returns 0 with *ctx set, or -1 (logged). */
    int (*ctx_init)(struct http_handler *h, struct worker *w, void **ctx);
    void (*ctx_dispose)(struct http_handler *h, void *ctx);
};

struct http_server;

struct http_handler {
    const struct http_handler_ops *ops;
    enum http_handler_type type;
    char *path; /* prefix */
    size_t path_len;
    uint64_t methods;   /* 1 << llhttp method; 0: any */
    long long max_body; /* for HTTP_BODY handlers; 0: the server's max_body */
    struct http_server *srv;
    unsigned index; /* among the server's handlers: where its context is */
    void *conf;
};

struct http_vhost {
    char **names; /* lower case; "*.example.com" or "*" */
    size_t nnames;
    struct http_handler *handlers;
    size_t nhandlers;
};

/* Per service, per worker counters (single writer: that worker). */
struct http_counters {
    _Atomic uint64_t accepted, active, requests, bytes_in, bytes_out;
    _Atomic uint64_t status[6]; /* [1..5]: 1xx..5xx; [0]: no response */
    _Atomic uint64_t hits[HT_COUNT];
} __attribute__((aligned(64)));

/* A service's counters survive reloads: looked up by name (supervisor). */
struct http_counters *http_counters_for(const char *service);
struct http_counters *http_counters_slot(struct http_counters *svc, int worker);

struct http_server {
    char *name;
    struct http_vhost *vhosts;
    size_t nvhosts;
    struct http_vhost *default_vhost;
    unsigned nhandlers;  /* in every virtual host */
    char *server_header; /* "Server: x\r\n", or "" */
    char *hsts_header;   /* "Strict-Transport-Security: ...\r\n" on TLS responses, or NULL */
    char *access_log;    /* path or NULL */
    int access_fd;       /* -1: off */
    struct mime_table *mime;
    unsigned max_uri, max_header_size, max_headers;
    long long max_body;
    unsigned header_timeout_ms, body_timeout_ms, keepalive_timeout_ms, send_timeout_ms;
    unsigned keepalive_requests;
    struct http_counters *stats;
};

/* Request headers the server or handlers look at, found in one pass. */
enum http_known {
    HK_HOST,
    HK_EXPECT,
    HK_IF_MODIFIED_SINCE,
    HK_IF_NONE_MATCH,
    HK_IF_RANGE,
    HK_RANGE,
    HK_ACCEPT_ENCODING,
    HK_AUTHORIZATION,
    HK_REFERER,
    HK_USER_AGENT,
    HK_COUNT
};

struct http_str {
    const char *p;
    size_t len;
};

struct http_hdr {
    uint32_t name, name_len, value, value_len; /* offsets into the input buffer */
};

struct http_req {
    struct http_req *next_free;
    struct http_conn *hc;
    struct conn *c;
    const struct http_server *srv;
    llhttp_t parser;

    /* Input: the request head stays in place until the response is done. */
    char *buf;
    size_t cap, len;
    size_t parsed;   /* bytes of buf given to the parser */
    size_t head_end; /* bytes of buf that belong to this request's head */
    uint32_t url, url_len;
    struct http_hdr *hdrs;
    unsigned nhdrs, hdrs_cap;
    unsigned head_bytes;
    int in_value;
    int chunk_check;  /* paused after chunk data: check its CRLF */
    char tail[2];     /* the last two body bytes already handed on */
    int error_status; /* set by a parser callback before it fails */

    /* The parsed request (valid from on_req to the end of the response). */
    int method;
    int http_minor;
    struct http_str target, query, known[HK_COUNT];
    char *path; /* decoded and normalised: starts with '/', no "." or ".." */
    const struct http_vhost *vhost;
    struct http_handler *handler;
    void *hstate;
    long long body_max, body_seen;
    int expects_body, body_taken, body_done;
    char user[64]; /* authenticated user, for the access log */

    /* The response. */
    int status;
    char *out; /* head (and small bodies) */
    size_t out_len, out_cap, out_off;
    int file_fd; /* body from a file with sendfile, or -1 */
    off_t file_off, file_end;
    void *file_ref; /* keeps file_fd open: released when the response ends */
    void (*file_unref)(void *ref);
    const char *mem; /* body from memory owned by mem_ref */
    size_t mem_len, mem_off;
    void *mem_ref;
    void (*mem_unref)(void *ref);
    uint64_t body_bytes; /* body length promised, for the log */
    int close_after;     /* Connection: close */
    int responded;

    /* HTTP_ASYNC handlers */
    uint8_t held;          /* the handler holds the request (on_abort if it ends) */
    uint8_t body_paused;   /* the handler asked for no more body for now */
    uint8_t streaming;     /* the body follows with http_stream_write */
    uint8_t stream_chunks; /* ... and goes out in chunked encoding */
    uint8_t stream_ended;
    uint8_t tunnel;           /* http_tunnel: the socket goes to the handler */
    uint16_t upstream_status; /* for the access log: a proxied request's */
    uint32_t upstream_ms;     /* upstream status, time */
    char upstream[56];        /* and address ("" if none) */
};

/* Worker-side helpers for handlers. */
const char *http_method_name(const struct http_req *r);
/* The handler's context on this worker, for this request's snapshot (what
 * its ctx_init made), or NULL if it has none. */
void *http_handler_ctx(const struct http_req *r, const struct http_handler *h);

/* Building a response: start, headers, then exactly one of the finishers. */
void http_resp_start(struct http_req *r, int status);
/* value as it is: made by the server (numbers, dates, configured types).
 * A value that holds bytes from a request or from outside (a decoded path
 * in a Location) goes through http_resp_header_untrusted, which
 * percent-encodes control characters, so no CR or LF can end the field. */
void http_resp_header(struct http_req *r, const char *name, const char *value, size_t len);
void http_resp_header_untrusted(struct http_req *r, const char *name, const char *value,
                                size_t len);
void http_resp_headerf(struct http_req *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void http_resp_raw(struct http_req *r, const char *s, size_t len);
/* Copies the body (small, generated bodies). */
void http_resp_body(struct http_req *r, const char *ctype, const char *body, size_t len);
/* A body held by ref until sent (cached file contents). */
void http_resp_body_ref(struct http_req *r, const char *body, size_t len, void *ref,
                        void (*unref)(void *));
/* A file body, sent with sendfile; ref keeps fd open. */
void http_resp_body_file(struct http_req *r, int fd, off_t off, off_t len, void *ref,
                         void (*unref)(void *));
/* No body (304, 204, or a header-only answer). */
void http_resp_nobody(struct http_req *r);
/* HTTP_ASYNC: a status line with the reason given (an upstream's). */
void http_resp_start_reason(struct http_req *r, int status, const char *reason, size_t len);
/* HTTP_ASYNC: the response (any of the finishers above) is set: send it.
 * If the request body is still coming, the connection closes after. */
void http_resume(struct http_req *r);
/* HTTP_ASYNC streaming: after http_resp_start and the headers, ends the
 * head. A body of known length gets Content-Length; otherwise it goes out
 * chunked (HTTP/1.1 clients) or delimited by close (HTTP/1.0). For HEAD,
 * 204 and 304 no body follows and length is the Content-Length to show
 * (-1: none). Then http_stream_write each piece and http_stream_end. */
void http_stream_begin(struct http_req *r, long long length);
/* Queues a piece of body: 0, or -1 when out of memory (the connection
 * then closes, and on_abort follows). Sending happens from the loop, never
 * inside this call, so the handler's state is safe until it returns. */
int http_stream_write(struct http_req *r, const char *data, size_t len);
/* The body is complete: the handler lets go of the request. */
void http_stream_end(struct http_req *r);
/* Bytes queued and not yet sent: the handler stops producing while this
 * is large, and on_drain says when it has all gone. */
size_t http_stream_pending(const struct http_req *r);
/* Stops or restarts reading the request body (back-pressure). */
void http_body_pause(struct http_req *r);
void http_body_resume(struct http_req *r);
/* After http_resp_start(r, 101) and the headers: ends the head, sends it,
 * and then hands the socket to the handler (on_tunnel), which moves bytes
 * itself (counting them with conn_count_in/out) and ends with
 * http_tunnel_close. The connection stays a connection of this worker. */
void http_tunnel(struct http_req *r);
void http_tunnel_close(struct http_req *r);

/* A small HTML error page; extra is NULL or complete header lines. */
void http_error(struct http_req *r, int status, const char *extra);
/* Redirect to an absolute or relative location. */
void http_redirect(struct http_req *r, int status, const char *location, size_t len);
/* "http://host[:port]" as the client reached us (Host, else the socket). */
size_t http_origin(struct http_req *r, char *out, size_t outlen);

const char *http_reason(int status);

extern const struct module http_module;

struct sbuf;
/* The HTTP figures (status.c): the module's stats(). */
void http_stats(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb);

/* Handlers. */
extern const struct http_handler_ops http_static_ops, http_redirect_ops, http_auth_ops,
    http_put_ops, http_status_ops, http_userdir_ops, http_proxy_ops;
