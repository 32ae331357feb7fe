/*
 * The proxy handler: { type = "proxy"; path = "/api/"; upstream = "app"; }
 *
 * Forwarding. The request goes upstream as HTTP/1.1 with a head we write
 * ourselves: hop-by-hop headers (Connection and what it names, Keep-Alive,
 * TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*) and the client's own
 * framing are dropped, X-Forwarded-For/-Proto/-Host and Via are added, and
 * the body is re-framed (Content-Length as the client declared it, or
 * chunked), so what reaches the upstream is always one request however the
 * client framed its bytes. Expect is answered by us (100 Continue), not
 * forwarded, as nginx does.
 *
 * Streaming. Request body bytes are written upstream as they come; past
 * HIGH_WATER bytes unsent, the client is not read. The response body is
 * written to the client as it comes; past HIGH_WATER bytes unsent, the
 * upstream is not read. So memory per request is bounded whatever the
 * sizes and speeds.
 *
 * Failures. A connection that cannot be made is retried on the next server
 * (any method: nothing was sent). A pooled connection that turns out closed
 * is retried on a fresh one, and an idempotent request whose upstream fails
 * before answering is retried on the next server, as long as everything sent
 * is still at hand (the first REPLAY_MAX bytes). Otherwise: 502, or 504 for a
 * timeout; once the response has begun, the client connection is closed so
 * that the client sees the truncation.
 */
#include "protocols/http/proxy/proxy_impl.h"

#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/worker.h"
#include "protocols/http/http.h"
#include "protocols/http/http_conn.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(sizeof((struct px_uconn *)0)->addr == sizeof((struct http_req *)0)->upstream,
               "an upstream address is copied whole into the access log's field");

#define HIGH_WATER (256 * 1024)
#define REPLAY_MAX (64 * 1024)
#define IN_INITIAL 16384
#define HEAD_MAX 65536

/* ---- configuration ---- */

static const char *const proxy_keys[] = {"upstream",       "strip_prefix", "host",
                                         "tunnel_timeout", "max_body",     NULL};

static int px_parse(struct cfg_ctx *ctx, const config_setting_t *b, struct http_handler *h)
{
    struct px_handler *ph = calloc(1, sizeof *ph);
    if (!ph)
        return cfg_error(ctx, b, "out of memory");
    h->conf = ph;
    const char *up = NULL, *host = NULL;
    long long max_body = 0;
    ph->tunnel_idle_ms = 600000;
    if (cfg_string(ctx, b, "upstream", &up) < 0 || cfg_string(ctx, b, "host", &host) < 0 ||
        cfg_bool(ctx, b, "strip_prefix", &ph->strip_prefix) < 0 ||
        cfg_duration_ms(ctx, b, "tunnel_timeout", 86400, &ph->tunnel_idle_ms) < 0 ||
        cfg_int(ctx, b, "max_body", 0, 1LL << 50, &max_body) < 0)
        return -1;
    if (!up)
        return cfg_error(ctx, b, "a proxy handler needs 'upstream', the name of an upstream");
    if (host && (!*host || strpbrk(host, " \t\r\n")))
        return cfg_error(ctx, b, "'host' must be a host name (and port)");
    ph->line = config_setting_source_line(b);
    h->max_body = max_body;
    if (!(ph->upstream_name = strdup(up)) || (host && !(ph->host = strdup(host))))
        return cfg_error(ctx, b, "out of memory");
    return 0;
}

static void px_free(struct http_handler *h)
{
    struct px_handler *ph = h->conf;
    if (!ph)
        return;
    free(ph->upstream_name);
    free(ph->host);
    free(ph);
}

/* ---- small helpers ---- */

/* The header names the proxy treats specially, told apart by length first:
 * every forwarded header goes through this, twice per request. */
enum hname {
    HN_OTHER,
    HN_HOP, /* Keep-Alive, TE, Trailer, Transfer-Encoding, Proxy-* */
    HN_CONNECTION,
    HN_UPGRADE,
    HN_HOST,
    HN_CONTENT_LENGTH,
    HN_EXPECT,
    HN_XFF,
    HN_XFP,
    HN_XFH,
    HN_VIA,
    HN_DATE,
    HN_SERVER,
};

static enum hname hname(const char *n, size_t len)
{
#define IS(lit) (strncasecmp(n, lit, len) == 0)
    switch (len) {
    case 2:
        return IS("te") ? HN_HOP : HN_OTHER;
    case 3:
        return IS("via") ? HN_VIA : HN_OTHER;
    case 4:
        return IS("host") ? HN_HOST : IS("date") ? HN_DATE : HN_OTHER;
    case 6:
        return IS("expect") ? HN_EXPECT : IS("server") ? HN_SERVER : HN_OTHER;
    case 7:
        return IS("trailer") ? HN_HOP : IS("upgrade") ? HN_UPGRADE : HN_OTHER;
    case 10:
        return IS("connection") ? HN_CONNECTION : IS("keep-alive") ? HN_HOP : HN_OTHER;
    case 14:
        return IS("content-length") ? HN_CONTENT_LENGTH : HN_OTHER;
    case 15:
        return IS("x-forwarded-for") ? HN_XFF : HN_OTHER;
    case 16:
        return IS("x-forwarded-host") ? HN_XFH : HN_OTHER;
    case 17:
        return IS("x-forwarded-proto") ? HN_XFP : IS("transfer-encoding") ? HN_HOP : HN_OTHER;
    }
#undef IS
    return len > 6 && strncasecmp(n, "proxy-", 6) == 0 ? HN_HOP : HN_OTHER;
}

/* Request headers we do not pass on: hop-by-hop ones, the client's framing,
 * and those we write ourselves (Host, X-Forwarded-Proto/-Host; X-Forwarded-For
 * and Via are joined with ours). */
static int request_drops(enum hname k)
{
    return k == HN_HOP || k == HN_CONNECTION || k == HN_UPGRADE || k == HN_HOST ||
           k == HN_CONTENT_LENGTH || k == HN_EXPECT || k == HN_XFP || k == HN_XFH;
}

/* Response headers we do not pass on: hop-by-hop ones (Upgrade goes on
 * with a 101), the upstream's framing, and Date and Server, which are ours. */
static int response_drops(enum hname k, int status)
{
    return k == HN_HOP || k == HN_CONNECTION || (k == HN_UPGRADE && status != 101) ||
           k == HN_CONTENT_LENGTH || k == HN_DATE || k == HN_SERVER;
}

/* Is token (case-insensitive) one of the comma-separated tokens of v? */
static int has_token(const char *v, size_t vl, const char *tok, size_t tl)
{
    size_t i = 0;
    while (i < vl) {
        while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < vl && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

static void cleanup(struct px_req *pr, int reusable);

/* ---- finishing ---- */

static int err_status(enum px_err e)
{
    return e == PXE_CONNECT_TIMEOUT || e == PXE_SEND_TIMEOUT || e == PXE_READ_TIMEOUT ? 504 : 502;
}

/* The request cannot be answered by an upstream: answer it ourselves, or,
 * once the response has begun, cut the client off. */
static void fail(struct px_req *pr, int status)
{
    struct http_req *r = pr->r;
    if (pr->call != PXC_ASYNC) {
        pr->fail_status = status;
        return;
    }
    int begun = pr->head_done;
    r->upstream_status = 0;
    cleanup(pr, 0);
    if (begun) {
        log_info(r->c->peer, "upstream failed mid-response; closing the client connection");
        http_tunnel_close(r);
        return;
    }
    if (!r->body_done)
        r->close_after = 1;
    http_error(r, status, NULL);
    http_resume(r);
}

/* Lets go of everything the request holds upstream. */
static void cleanup(struct px_req *pr, int reusable)
{
    struct http_req *r = pr->r;
    if (pr->uc && !r->upstream[0])
        memcpy(r->upstream, pr->uc->addr, sizeof r->upstream); /* same size */
    r->upstream_ms = (uint32_t)(px_now_ms() - pr->started_ms);
    if (pr->waiting) {
        list_remove(&pr->wait_node);
        pr->waiting = 0;
    }
    if (pr->cfd >= 0) {
        if (pr->cwatching)
            event_del(&pr->cev);
        pr->cwatching = 0;
        pr->cfd = -1; /* the client's socket is the connection's: not closed here */
    }
    px_release(pr, reusable);
    r->hstate = NULL;
    px_req_put(pr);
}

/* ---- the request head ---- */

static void add_target(struct px_req *pr, struct sbuf *o)
{
    struct http_req *r = pr->r;
    const char *t = r->target.p;
    size_t tl = r->target.len;
    if (tl && t[0] != '/') { /* absolute-form: from the path on */
        const char *auth = memchr(t, ':', tl);
        const char *slash = auth && (size_t)(auth - t) + 3 <= tl
                                ? memchr(auth + 3, '/', (size_t)(t + tl - auth - 3))
                                : NULL;
        if (!slash) {
            const char *q = memchr(t, '?', tl);
            sb_adds(o, "/");
            if (q)
                sb_add(o, q, (size_t)(t + tl - q));
            return;
        }
        tl = (size_t)(t + tl - slash);
        t = slash;
    }
    const struct http_handler *h = r->handler;
    if (!pr->ph->strip_prefix || h->path_len <= 1) {
        sb_add(o, t, tl);
        return;
    }
    size_t strip = h->path[h->path_len - 1] == '/' ? h->path_len - 1 : h->path_len;
    if (tl >= strip && memcmp(t, h->path, strip) == 0) {
        if (tl == strip || t[strip] == '?')
            sb_adds(o, "/");
        sb_add(o, t + strip, tl - strip);
        return;
    }
    /* The raw target spells the prefix differently (escapes): use the
     * normalised path, re-encoded. */
    const char *p = r->path + (strlen(r->path) >= strip ? strip : 0);
    if (*p != '/')
        sb_adds(o, "/");
    sb_add_urlpath(o, p, strlen(p));
    if (r->query.p) {
        sb_adds(o, "?");
        sb_add(o, r->query.p, r->query.len);
    }
}

static int build_request(struct px_req *pr)
{
    struct http_req *r = pr->r;
    struct sbuf *o = &pr->out;
    const llhttp_t *p = &r->parser;
    sb_adds(o, http_method_name(r));
    sb_adds(o, " ");
    add_target(pr, o);
    sb_adds(o, " HTTP/1.1\r\n");

    const char *conn = NULL, *upgrade = NULL;
    size_t conn_len = 0, upgrade_len = 0;
    for (unsigned i = 0; i < r->nhdrs; i++) {
        const struct http_hdr *hd = &r->hdrs[i];
        enum hname k = hname(r->buf + hd->name, hd->name_len);
        if (k == HN_CONNECTION) {
            conn = r->buf + hd->value;
            conn_len = hd->value_len;
        } else if (k == HN_UPGRADE) {
            upgrade = r->buf + hd->value;
            upgrade_len = hd->value_len;
        }
    }
    pr->upgrade = upgrade && conn && r->method == HTTP_GET &&
                  has_token(conn, conn_len, "upgrade", 7) && !(p->flags & F_CHUNKED) &&
                  !p->content_length;

    /* Host: the configured one, else the client's, else (an HTTP/1.0 client
     * sent none) the upstream's name, as nginx's $proxy_host. */
    const struct http_str *host = &r->known[HK_HOST];
    sb_adds(o, "Host: ");
    if (pr->ph->host || !host->p)
        sb_adds(o, pr->ph->host ? pr->ph->host : pr->up->name);
    else
        sb_add(o, host->p, host->len);
    sb_adds(o, "\r\n");
    struct sbuf xff = {0}, via = {0};
    for (unsigned i = 0; i < r->nhdrs; i++) {
        const struct http_hdr *hd = &r->hdrs[i];
        const char *n = r->buf + hd->name, *v = r->buf + hd->value;
        size_t nl = hd->name_len, vl = hd->value_len;
        enum hname k = hname(n, nl);
        if (k == HN_XFF || k == HN_VIA) {
            struct sbuf *j = k == HN_VIA ? &via : &xff;
            if (j->len)
                sb_adds(j, ", ");
            sb_add(j, v, vl);
            continue;
        }
        if (request_drops(k) || (conn && has_token(conn, conn_len, n, nl)))
            continue;
        if (vl) /* the line as it came: name, colon, white space, value */
            sb_add(o, n, (size_t)(v + vl - n));
        else
            sb_add(o, n, nl), sb_adds(o, ":");
        sb_adds(o, "\r\n");
    }
    char ip[64];
    conn_peer_host(r->c, ip, sizeof ip);
    sb_adds(o, "X-Forwarded-For: ");
    if (xff.len) {
        sb_add(o, xff.p, xff.len);
        sb_adds(o, ", ");
    }
    sb_adds(o, ip);
    sb_adds(o, r->c->ssl ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n");
    if (host->p) {
        sb_adds(o, "X-Forwarded-Host: ");
        sb_add(o, host->p, host->len);
        sb_adds(o, "\r\n");
    }
    sb_adds(o, "Via: ");
    if (via.len) {
        sb_add(o, via.p, via.len);
        sb_adds(o, ", ");
    }
    sb_adds(o, r->http_minor ? "1.1 medusa\r\n" : "1.0 medusa\r\n");
    sb_free(&xff);
    sb_free(&via);
    if (pr->upgrade) {
        sb_adds(o, "Connection: upgrade\r\nUpgrade: ");
        sb_add(o, upgrade, upgrade_len);
        sb_adds(o, "\r\n");
    }
    if (p->flags & F_CHUNKED) {
        sb_adds(o, "Transfer-Encoding: chunked\r\n");
        pr->body_chunked = 1;
    } else if ((p->flags & F_CONTENT_LENGTH) || p->content_length) {
        sb_addf(o, "Content-Length: %llu\r\n", (unsigned long long)p->content_length);
    }
    sb_adds(o, "\r\n");
    pr->body_end = !r->expects_body;
    return o->failed ? -1 : 0;
}

/* ---- sending ---- */

static void upstream_error(struct px_req *pr, enum px_err e);
static void start_reading(struct px_req *pr);

/* Writes what is queued; then waits for more body, or for the answer. */
static void send_more(struct px_req *pr)
{
    struct px_uconn *uc = pr->uc;
    struct http_req *r = pr->r;
    while (pr->out_off < pr->out.len) {
        ssize_t n = send(uc->fd, pr->out.p + pr->out_off, pr->out.len - pr->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                px_uconn_watch(uc, EV_WRITE);
                px_deadline(pr, pr->up->send_ms);
                return;
            }
            log_debug(uc->addr, "upstream send: %s", strerror(errno));
            upstream_error(pr, PXE_RESET);
            return;
        }
        pr->sent_any = 1;
        pr->out_off += (size_t)n;
    }
    /* Everything queued is out. Keep it for a replay while it is small. */
    if (pr->out.len > REPLAY_MAX) {
        pr->out.len = pr->out_off = 0;
        pr->replayable = 0;
    }
    if (r->body_paused)
        http_body_resume(r);
    if (!pr->body_end) {
        px_uconn_watch(uc, 0);
        px_no_deadline(pr); /* the client's body timeout runs meanwhile */
        return;
    }
    start_reading(pr);
}

static void start_sending(struct px_req *pr)
{
    pr->phase = PXP_SEND;
    pr->out_off = 0;
    send_more(pr);
}

/* px_connect's or px_connect_server's success (rc 0 or 1): send now, or
 * wait for the connect or for DNS, within connect_timeout. */
static void got_server(struct px_req *pr, int rc)
{
    pr->phase = PXP_CONNECT;
    if (rc == 0 && !pr->uc->connecting) {
        start_sending(pr);
        return;
    }
    if (rc == 0)
        px_uconn_watch(pr->uc, EV_WRITE);
    px_deadline(pr, pr->up->connect_ms);
}

/* why: what made us look for another server (PXE_NONE the first time), for
 * the answer when none is left. */
static void connect_next(struct px_req *pr, enum px_err why)
{
    enum px_err e = why;
    int rc = px_connect(pr, &e);
    if (rc < 0) {
        log_info(pr->r->c->peer, "upstream '%s': no server could take the request (%s)",
                 pr->up->name, px_err_text(e));
        fail(pr, err_status(e));
        return;
    }
    got_server(pr, rc);
}

void px_proceed(struct px_req *pr)
{
    enum px_err e;
    px_no_deadline(pr);
    int rc = px_connect_server(pr, pr->server, &e);
    if (rc < 0) {
        px_note_failure(pr->pw, pr->up->servers[pr->server].rec, pr->up, e);
        connect_next(pr, e);
        return;
    }
    got_server(pr, rc);
}

static int is_connect_error(enum px_err e)
{
    return e == PXE_REFUSED || e == PXE_CONNECT || e == PXE_CONNECT_TIMEOUT || e == PXE_DNS;
}

/* The upstream connection failed: retry where that is safe, else fail. */
static void upstream_error(struct px_req *pr, enum px_err e)
{
    struct px_uconn *uc = pr->uc;
    int server = pr->server;
    int stale = uc && uc->reused && e == PXE_RESET && !pr->got_response;
    int retry =
        pr->replayable && !pr->got_response &&
        (is_connect_error(e) || (pr->idempotent && e == PXE_RESET) || (stale && !pr->sent_any));
    if (!stale)
        px_note_failure(pr->pw, pr->up->servers[server].rec, pr->up, e);
    px_release(pr, 0);
    pr->sent_any = 0;
    if (stale && pr->replayable && (pr->idempotent || retry)) {
        /* A pooled connection the server had closed: a fresh one. */
        log_debug(pr->r->c->peer, "pooled upstream connection was closed; retrying");
        enum px_err e2;
        int rc = px_connect_server(pr, server, &e2);
        if (rc >= 0) {
            got_server(pr, rc);
            return;
        }
        px_note_failure(pr->pw, pr->up->servers[server].rec, pr->up, e2);
        e = e2;
        retry = 1;
    }
    if (retry) {
        connect_next(pr, e);
        return;
    }
    log_info(pr->r->c->peer, "upstream %s: %s", pr->up->servers[server].text, px_err_text(e));
    fail(pr, err_status(e));
}

/* ---- the response ---- */

static struct px_req *of(llhttp_t *p)
{
    return p->data;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    struct px_req *pr = of(p);
    if (!pr->reason_len)
        pr->reason = (uint32_t)(at - pr->in);
    pr->reason_len += (uint32_t)len;
    return 0;
}

static int on_hfield(llhttp_t *p, const char *at, size_t len)
{
    struct px_req *pr = of(p);
    if (pr->nhdrs == 0 || pr->in_value) {
        if (pr->nhdrs == PX_MAX_HDRS)
            return -1;
        pr->hdrs[pr->nhdrs++] = (struct px_hdr){(uint32_t)(at - pr->in), 0, 0, 0};
        pr->in_value = 0;
    }
    pr->hdrs[pr->nhdrs - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t len)
{
    struct px_req *pr = of(p);
    struct px_hdr *h = &pr->hdrs[pr->nhdrs - 1];
    if (!pr->in_value) {
        h->value = (uint32_t)(at - pr->in);
        pr->in_value = 1;
    }
    h->value_len += (uint32_t)len;
    return 0;
}

/* The response head is complete: the client's head, from it. Returns 1
 * (no body) for HEAD, 2 to switch protocols, else 0. */
static int on_resp_headers(llhttp_t *p)
{
    struct px_req *pr = of(p);
    struct http_req *r = pr->r;
    int status = p->status_code;
    if (status < 200 && status != 101) { /* interim (100, 103): not passed on */
        pr->skip_1xx = 1;
        return 0;
    }
    if (status == 101 && !pr->upgrade) {
        log_info(pr->uc->addr, "upstream switched protocols unasked");
        return -1;
    }
    const char *conn = NULL;
    size_t conn_len = 0;
    for (unsigned i = 0; i < pr->nhdrs; i++)
        if (hname(pr->in + pr->hdrs[i].name, pr->hdrs[i].name_len) == HN_CONNECTION) {
            conn = pr->in + pr->hdrs[i].value;
            conn_len = pr->hdrs[i].value_len;
        }
    if (conn &&
        (has_token(conn, conn_len, "keep-alive", 10) || has_token(conn, conn_len, "close", 5)) &&
        !memchr(conn, ',', conn_len))
        conn = NULL; /* the usual value names no header: no need to look for one */
    http_resp_start_reason(r, status, pr->in + pr->reason, pr->reason_len);
    for (unsigned i = 0; i < pr->nhdrs; i++) {
        const char *n = pr->in + pr->hdrs[i].name, *v = pr->in + pr->hdrs[i].value;
        size_t nl = pr->hdrs[i].name_len, vl = pr->hdrs[i].value_len;
        enum hname k = hname(n, nl);
        if (response_drops(k, status) ||
            (conn && !(k == HN_UPGRADE && status == 101) && has_token(conn, conn_len, n, nl)))
            continue;
        /* v points into pr->in, the head llhttp parsed: never NULL with headers */
        /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
        if (vl && (memchr(v, '\n', vl) || memchr(v, '\r', vl))) {
            log_info(pr->uc->addr, "upstream header %.*s with a line break dropped", (int)nl, n);
            continue; /* obs-fold: never passed to the client */
        }
        if (vl)
            http_resp_raw(r, n, (size_t)(v + vl - n));
        else
            http_resp_raw(r, n, nl), http_resp_raw(r, ":", 1);
        http_resp_raw(r, "\r\n", 2);
    }
    r->upstream_status = (uint16_t)status;
    memcpy(r->upstream, pr->uc->addr, sizeof r->upstream); /* same size */
    pr->head_done = 1;
    if (status == 101) {
        http_resp_raw(r, "Connection: upgrade\r\n", 21);
        http_tunnel(r);
        return 2;
    }
    long long length = (p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED)
                           ? (long long)p->content_length
                           : -1;
    http_stream_begin(r, length);
    return r->method == HTTP_HEAD ? 1 : 0;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct px_req *pr = of(p);
    return http_stream_write(pr->r, at, len) < 0 ? -1 : 0;
}

static int on_resp_complete(llhttp_t *p)
{
    struct px_req *pr = of(p);
    if (pr->skip_1xx) { /* the real response follows */
        pr->skip_1xx = 0;
        pr->nhdrs = 0;
        pr->in_value = 0;
        pr->reason_len = 0;
        return 0;
    }
    if (pr->r->tunnel) /* 101: llhttp then stops with HPE_PAUSED_UPGRADE */
        return 0;
    pr->resp_done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t resp_settings = {
    .on_status = on_status,
    .on_header_field = on_hfield,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_resp_headers,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_complete,
};

static void start_reading(struct px_req *pr)
{
    pr->phase = PXP_WAIT;
    pr->in_len = 0;
    pr->nhdrs = 0;
    pr->in_value = 0;
    pr->reason_len = 0;
    llhttp_init(&pr->parser, HTTP_RESPONSE, &resp_settings);
    pr->parser.data = pr;
    px_uconn_watch(pr->uc, EV_READ);
    px_deadline(pr, pr->up->read_ms);
}

static void tunnel_begin_upstream(struct px_req *pr, size_t from);

/* The response ended cleanly: the connection goes back to the pool. */
static void response_done(struct px_req *pr, size_t extra)
{
    struct http_req *r = pr->r;
    int reusable = !extra && llhttp_should_keep_alive(&pr->parser);
    px_note_success(pr->pw, pr->up->servers[pr->server].rec);
    cleanup(pr, reusable);
    http_stream_end(r);
}

static void read_response(struct px_req *pr)
{
    struct px_uconn *uc = pr->uc;
    if (pr->in_cap - pr->in_len < 4096) {
        size_t cap = pr->in_cap ? pr->in_cap * 2 : IN_INITIAL;
        if (pr->head_done || cap > HEAD_MAX * 2) {
            if (!pr->head_done) {
                log_info(uc->addr, "upstream response head too large");
                upstream_error(pr, PXE_BAD_RESPONSE);
                return;
            }
        } else {
            char *b = realloc(pr->in, cap);
            if (!b) {
                upstream_error(pr, PXE_BAD_RESPONSE);
                return;
            }
            pr->in = b;
            pr->in_cap = cap;
        }
    }
    ssize_t n = recv(uc->fd, pr->in + pr->in_len, pr->in_cap - pr->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (n == 0 && pr->head_done) { /* the end of a body delimited by close? */
            llhttp_errno_t err = llhttp_finish(&pr->parser);
            if ((err == HPE_OK || err == HPE_PAUSED) && pr->resp_done) {
                response_done(pr, 1);
                return;
            }
        }
        if (n < 0)
            log_debug(uc->addr, "upstream recv: %s", strerror(errno));
        upstream_error(pr, PXE_RESET);
        return;
    }
    pr->got_response = 1;
    size_t start = pr->in_len;
    pr->in_len += (size_t)n;
    pr->phase = pr->head_done ? PXP_BODY : PXP_WAIT;
    llhttp_errno_t err = llhttp_execute(&pr->parser, pr->in + start, (size_t)n);
    if (err == HPE_PAUSED_UPGRADE) {
        size_t at = (size_t)(llhttp_get_error_pos(&pr->parser) - pr->in);
        tunnel_begin_upstream(pr, at);
        return;
    }
    if (err == HPE_PAUSED && pr->resp_done) {
        size_t at = (size_t)(llhttp_get_error_pos(&pr->parser) - pr->in);
        response_done(pr, pr->in_len - at);
        return;
    }
    if (err != HPE_OK) {
        log_info(uc->addr, "bad response from upstream: %s", llhttp_get_error_reason(&pr->parser));
        upstream_error(pr, PXE_BAD_RESPONSE);
        return;
    }
    if (pr->head_done) {
        pr->in_len = 0; /* body bytes were copied out; the head is no longer needed */
        if (http_stream_pending(pr->r) > HIGH_WATER) {
            px_uconn_watch(uc, 0); /* on_drain resumes */
            pr->read_paused = 1;
            px_no_deadline(pr);
            return;
        }
    }
    px_deadline(pr, pr->up->read_ms);
}

/* ---- upstream events ---- */

static void tunnel_io(struct px_req *pr);

void px_io(struct px_uconn *uc, short what)
{
    struct px_req *pr = uc->pr;
    switch (pr->phase) {
    case PXP_CONNECT: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(uc->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            log_info(uc->addr, "upstream '%s': connect: %s", pr->up->name, strerror(err));
            upstream_error(pr, err == ECONNREFUSED ? PXE_REFUSED : PXE_CONNECT);
            return;
        }
        uc->connecting = 0;
        start_sending(pr);
        return;
    }
    case PXP_SEND:
        if (what & EV_WRITE) {
            send_more(pr);
            return;
        }
        /* The upstream speaks before the request is sent: gone, or an early
         * answer, read once the request is out. */
        char b;
        ssize_t n = recv(uc->fd, &b, 1, MSG_PEEK);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            upstream_error(pr, PXE_RESET);
            return;
        }
        px_uconn_watch(uc, pr->out_off < pr->out.len ? EV_WRITE : 0);
        return;
    case PXP_WAIT:
    case PXP_BODY:
        read_response(pr);
        return;
    case PXP_TUNNEL:
        tunnel_io(pr);
        return;
    }
}

void px_timeout(struct px_req *pr)
{
    switch (pr->phase) {
    case PXP_CONNECT:
        log_info(pr->r->c->peer, "upstream %s: connect timed out",
                 pr->server >= 0 ? pr->up->servers[pr->server].text : "?");
        if (pr->waiting) {
            list_remove(&pr->wait_node);
            pr->waiting = 0;
            upstream_error(pr, PXE_DNS);
        } else {
            upstream_error(pr, PXE_CONNECT_TIMEOUT);
        }
        return;
    case PXP_SEND:
        upstream_error(pr, PXE_SEND_TIMEOUT);
        return;
    case PXP_WAIT:
    case PXP_BODY:
        log_info(pr->r->c->peer, "upstream %s: read timed out", pr->uc->addr);
        pr->got_response = 1; /* no retry: a slow server is not a dead one */
        upstream_error(pr, PXE_READ_TIMEOUT);
        return;
    case PXP_TUNNEL: {
        struct http_req *r = pr->r;
        log_info(r->c->peer, "tunnel idle for too long; closed");
        cleanup(pr, 0);
        http_tunnel_close(r);
        return;
    }
    }
}

/* ---- tunnels (101 Switching Protocols) ---- */

static void tunnel_update(struct px_req *pr);

static void client_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tunnel_io(arg);
}

/* Moves what each side can take; closes when both sides are done. */
static void tunnel_io(struct px_req *pr)
{
    struct http_req *r = pr->r;
    struct px_uconn *uc = pr->uc;
    int moved = 0, failed = 0;
    for (int round = 0; round < 4 && !failed; round++) {
        int progress = 0;
        /* client -> upstream */
        if (pr->out_off < pr->out.len) {
            ssize_t n =
                send(uc->fd, pr->out.p + pr->out_off, pr->out.len - pr->out_off, MSG_NOSIGNAL);
            if (n > 0) {
                pr->out_off += (size_t)n;
                progress = 1;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                failed = 1;
            }
            if (pr->out_off == pr->out.len)
                pr->out.len = pr->out_off = 0;
        } else if (!pr->c_eof) {
            char b[16384];
            short want;
            ssize_t n = conn_read(r->c, b, sizeof b, &want);
            if (n > 0) {
                sb_add(&pr->out, b, (size_t)n);
                conn_count_in(r->c, (size_t)n);
                progress = !pr->out.failed;
                failed = pr->out.failed;
            } else if (n == 0) {
                pr->c_eof = 1;
                shutdown(uc->fd, SHUT_WR);
            } else if (errno != EAGAIN && errno != EINTR) {
                failed = 1;
            }
        }
        /* upstream -> client */
        if (pr->in_len) {
            short want;
            ssize_t n = conn_write(r->c, pr->in, pr->in_len, &want);
            if (n > 0) {
                memmove(pr->in, pr->in + n, pr->in_len - (size_t)n);
                pr->in_len -= (size_t)n;
                conn_count_out(r->c, (size_t)n);
                progress = 1;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                failed = 1;
            }
        } else if (!pr->u_eof) {
            ssize_t n = recv(uc->fd, pr->in, pr->in_cap, 0);
            if (n > 0) {
                pr->in_len = (size_t)n;
                progress = 1;
            } else if (n == 0) {
                pr->u_eof = 1;
                conn_shutdown_write(r->c);
            } else if (errno != EAGAIN && errno != EINTR) {
                failed = 1;
            }
        }
        moved |= progress;
        if (!progress)
            break;
    }
    if (failed || (pr->c_eof && pr->u_eof && !pr->in_len && pr->out_off == pr->out.len)) {
        cleanup(pr, 0);
        http_tunnel_close(r);
        return;
    }
    if (moved)
        px_deadline(pr, pr->ph->tunnel_idle_ms);
    tunnel_update(pr);
}

static void tunnel_update(struct px_req *pr)
{
    short uw = 0, cw = 0;
    if (pr->out_off < pr->out.len)
        uw |= EV_WRITE;
    else if (!pr->c_eof)
        cw |= EV_READ;
    if (pr->in_len)
        cw |= EV_WRITE;
    else if (!pr->u_eof)
        uw |= EV_READ;
    px_uconn_watch(pr->uc, uw);
    if (pr->cwatching != cw) {
        if (pr->cwatching)
            event_del(&pr->cev);
        pr->cwatching = cw;
        if (cw) {
            event_assign(&pr->cev, pr->pw->w->base, pr->cfd, cw | EV_PERSIST, client_cb, pr);
            event_add(&pr->cev, NULL);
        }
    }
    /* TLS may hold client bytes the socket will not announce */
    if ((cw & EV_READ) && conn_pending(pr->r->c))
        event_active(&pr->cev, EV_READ, 1);
}

/* The 101 head was parsed: keep what followed it for the client, and wait
 * until the client has the head (on_tunnel). */
static void tunnel_begin_upstream(struct px_req *pr, size_t from)
{
    memmove(pr->in, pr->in + from, pr->in_len - from);
    pr->in_len -= from;
    pr->phase = PXP_TUNNEL;
    px_uconn_watch(pr->uc, 0);
    px_no_deadline(pr);
}

static void px_on_tunnel(struct http_req *r, struct conn *c, const char *pending, size_t len)
{
    struct px_req *pr = r->hstate;
    pr->cfd = c->fd;
    pr->out.len = pr->out_off = 0;
    sb_add(&pr->out, pending, len);
    if (pr->out.failed) {
        cleanup(pr, 0);
        http_tunnel_close(r);
        return;
    }
    px_deadline(pr, pr->ph->tunnel_idle_ms);
    tunnel_io(pr);
}

/* ---- the handler ---- */

static int idempotent(int method)
{
    return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_PUT ||
           method == HTTP_DELETE || method == HTTP_OPTIONS || method == HTTP_TRACE;
}

static enum http_action px_on_req(struct http_handler *h, struct http_req *r)
{
    struct px_handler *ph = h->conf;
    struct px_req *pr = px_req_get(px_worker_of(r));
    if (!pr) {
        log_error(r->c->peer, "out of memory for a proxied request");
        http_error(r, 503, NULL);
        return HTTP_DONE;
    }
    pr->r = r;
    pr->ph = ph;
    pr->up = ph->up;
    pr->started_ms = px_now_ms();
    pr->idempotent = (uint8_t)idempotent(r->method);
    pr->replayable = 1;
    pr->call = PXC_REQ;
    r->hstate = pr;
    if (build_request(pr) < 0) {
        cleanup(pr, 0);
        http_error(r, 500, NULL);
        return HTTP_DONE;
    }
    connect_next(pr, PXE_NONE);
    if (pr->fail_status) { /* failed before we could wait */
        int st = pr->fail_status;
        cleanup(pr, 0);
        http_error(r, st, NULL);
        return HTTP_DONE;
    }
    pr->call = PXC_ASYNC;
    return HTTP_ASYNC;
}

static int px_on_body(struct http_req *r, const char *data, size_t len)
{
    struct px_req *pr = r->hstate;
    if (!pr)
        return 502;
    if (pr->body_chunked)
        sb_addf(&pr->out, "%zx\r\n", len);
    sb_add(&pr->out, data, len);
    if (pr->body_chunked)
        sb_adds(&pr->out, "\r\n");
    if (pr->out.failed)
        return 500;
    if (pr->phase == PXP_SEND && pr->out_off < pr->out.len && pr->uc->watching != EV_WRITE) {
        pr->call = PXC_BODY;
        send_more(pr);
        if (pr->fail_status)
            return pr->fail_status; /* on_abort follows and cleans up */
        pr->call = PXC_ASYNC;
    }
    if (pr->out.len - pr->out_off > HIGH_WATER)
        http_body_pause(r);
    return 0;
}

static void px_on_body_end(struct http_req *r)
{
    struct px_req *pr = r->hstate;
    if (!pr)
        return;
    if (pr->body_chunked)
        sb_adds(&pr->out, "0\r\n\r\n");
    pr->body_end = 1;
    if (pr->phase == PXP_SEND && pr->uc->watching != EV_WRITE) {
        pr->call = PXC_BODY;
        send_more(pr);
        pr->call = PXC_ASYNC;
        if (pr->fail_status) { /* answered once the body is read */
            int st = pr->fail_status;
            cleanup(pr, 0);
            r->held = 0;
            http_error(r, st, NULL);
        }
    }
}

static void px_on_abort(struct http_req *r)
{
    struct px_req *pr = r->hstate;
    if (pr)
        cleanup(pr, 0);
}

static void px_on_drain(struct http_req *r)
{
    struct px_req *pr = r->hstate;
    if (pr && pr->read_paused && pr->uc) {
        pr->read_paused = 0;
        px_uconn_watch(pr->uc, EV_READ);
        px_deadline(pr, pr->up->read_ms);
    }
}

const struct http_handler_ops http_proxy_ops = {
    .type = "proxy",
    .keys = proxy_keys,
    .parse = px_parse,
    .free = px_free,
    .on_req = px_on_req,
    .on_body = px_on_body,
    .on_body_end = px_on_body_end,
    .on_abort = px_on_abort,
    .on_drain = px_on_drain,
    .on_tunnel = px_on_tunnel,
};
