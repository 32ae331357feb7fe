/*
 * HTTP/1.x connections: socket I/O, llhttp glue, limits, timeouts,
 * keep-alive and pipelining, response sending, the access log.
 *
 * Memory. An idle keep-alive connection is a struct conn, a struct
 * http_conn and its event: no buffers. A request (struct http_req: parser,
 * input and output buffers) is taken from a small per-worker pool when bytes
 * arrive and given back when its response is sent and nothing more is
 * buffered.
 *
 * One request at a time. llhttp pauses at the end of the head (so routing
 * happens outside its callbacks) and at the end of the message; a pipelined
 * request waits in the input buffer until the response before it is sent,
 * so responses go out in order. The head stays in place in the input buffer
 * until its response is sent (handlers and the access log point into it);
 * body bytes are handed on and dropped.
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
 */
#include "protocols/http/http_conn.h"

#include "core/conn.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/worker.h"
#include "protocols/http/http_util.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

enum hc_state { HC_IDLE, HC_HEAD, HC_BODY, HC_WRITE, HC_LINGER };

struct http_worker {
    struct worker *w;
    struct event *tick;
    struct http_conn *conns;
    struct http_req *pool;
    unsigned npool;
    time_t date_sec;
    time_t access_warned; /* last second a failing access log was reported */
    char date_hdr[sizeof "Date: \r\n" + HTTP_DATE_LEN];
    char log_time[40];         /* 27/Nov/2026:16:42:25 +0000 */
    struct sbuf errpages[500]; /* statuses 100..599 */
};

struct http_conn {
    struct http_conn *prev, *next; /* the worker's HTTP connections */
    struct conn *c;
    struct http_worker *hw;
    struct http_req *req; /* NULL while idle */
    uint64_t deadline;    /* monotonic ms; 0: none */
    uint32_t nreq;        /* requests answered */
    uint8_t state;
    short watching; /* EV_READ or EV_WRITE */
    uint8_t stopping;
    uint8_t nodelay;
    uint8_t corked;
    struct event ev;
};

static const llhttp_settings_t settings;
static void process(struct http_conn *hc);
static void flush(struct http_conn *hc);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const struct http_server *srv_of(const struct http_conn *hc)
{
    return hc->c->svc->pcfg;
}

static struct http_counters *counters(const struct http_conn *hc)
{
    return http_counters_slot(srv_of(hc)->stats, hc->hw->w->id);
}

static void update_clock(struct http_worker *hw)
{
    struct timeval tv;
    event_base_gettimeofday_cached(hw->w->base, &tv);
    if (tv.tv_sec == hw->date_sec)
        return;
    hw->date_sec = tv.tv_sec;
    char d[HTTP_DATE_LEN + 1];
    http_date_format(tv.tv_sec, d);
    snprintf(hw->date_hdr, sizeof hw->date_hdr, "Date: %s\r\n", d);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    strftime(hw->log_time, sizeof hw->log_time, "%d/%b/%Y:%H:%M:%S %z", &tm);
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
    llhttp_init(&r->parser, HTTP_REQUEST, &settings);
    r->parser.data = r;
    return r;
}

/* Forgets the request's parse and response state; keeps the buffers. */
static void req_reset(struct http_req *r)
{
    if (r->file_unref)
        r->file_unref(r->file_ref);
    if (r->mem_unref)
        r->mem_unref(r->mem_ref);
    free(r->path);
    r->path = NULL;
    r->file_unref = r->mem_unref = NULL;
    r->file_ref = r->mem_ref = NULL;
    r->file_fd = -1;
    r->file_off = r->file_end = 0;
    r->mem = NULL;
    r->mem_len = r->mem_off = 0;
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
}

static void req_abort_body(struct http_req *r)
{
    if (r->body_taken && !r->body_done && r->handler && r->handler->ops->on_abort)
        r->handler->ops->on_abort(r);
    r->body_taken = 0;
}

static void req_put(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    if (!r)
        return;
    hc->req = NULL;
    req_abort_body(r);
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

static void watch(struct http_conn *hc, short what)
{
    if (hc->watching == what)
        return;
    if (hc->watching)
        event_del(&hc->ev);
    event_assign(&hc->ev, hc->hw->w->base, hc->c->fd, what | EV_PERSIST, io_cb, hc);
    event_add(&hc->ev, NULL);
    hc->watching = what;
}

static void set_state(struct http_conn *hc, enum hc_state st)
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
    }
    hc->state = st;
    hc->deadline = now_ms() + ms;
}

static void hc_close(struct http_conn *hc)
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
    shutdown(hc->c->fd, SHUT_WR);
    set_state(hc, HC_LINGER);
    watch(hc, EV_READ);
}

/* ---- the access log ---- */

static void log_escaped(struct sbuf *sb, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            sb_addf(sb, "\\x%02X", ch);
        else
            sb_add(sb, s + i, 1);
    }
}

static void access_log(struct http_conn *hc, struct http_req *r)
{
    const struct http_server *srv = r->srv;
    if (srv->access_fd < 0)
        return;
    /* Combined Log Format, host without the port. */
    const char *peer = hc->c->peer;
    size_t plen = strlen(peer);
    const char *colon = strrchr(peer, ':');
    if (colon && strncmp(peer, "unix:", 5) != 0)
        plen = (size_t)(colon - peer);
    if (plen > 1 && peer[0] == '[')
        peer++, plen -= 2;
    struct sbuf sb = {0};
    sb_add(&sb, peer, plen);
    sb_adds(&sb, " - ");
    if (r->user[0])
        log_escaped(&sb, r->user, strlen(r->user));
    else
        sb_adds(&sb, "-");
    sb_addf(&sb, " [%s] \"", hc->hw->log_time);
    if (r->target.p) {
        sb_adds(&sb, http_method_name(r));
        sb_adds(&sb, " ");
        log_escaped(&sb, r->target.p, r->target.len);
        sb_addf(&sb, " HTTP/1.%d", r->http_minor);
    }
    sb_addf(&sb, "\" %d %llu \"", r->status, (unsigned long long)r->body_bytes);
    const struct http_str *ref = &r->known[HK_REFERER], *ua = &r->known[HK_USER_AGENT];
    if (ref->p)
        log_escaped(&sb, ref->p, ref->len);
    else
        sb_adds(&sb, "-");
    sb_adds(&sb, "\" \"");
    if (ua->p)
        log_escaped(&sb, ua->p, ua->len);
    else
        sb_adds(&sb, "-");
    sb_adds(&sb, "\"\n");
    /* One write per line: O_APPEND keeps lines from several workers whole. A
     * failing log (disk full) is reported once a second, not per request. */
    if (!sb.failed && write(srv->access_fd, sb.p, sb.len) < 0 &&
        hc->hw->access_warned != hc->hw->date_sec) {
        hc->hw->access_warned = hc->hw->date_sec;
        log_warn(srv->name, "access log %s: %s", srv->access_log, strerror(errno));
    }
    sb_free(&sb);
}

/* ---- finishing a response ---- */

static void count_response(struct http_conn *hc, struct http_req *r)
{
    struct http_counters *ct = counters(hc);
    stat_add(&ct->requests, 1);
    stat_add(&hc->c->w->stats->requests, 1);
    int cls = r->status / 100;
    stat_add(&ct->status[cls >= 1 && cls <= 5 ? cls : 0], 1);
}

/* The response is sent: log it, then read the next request or close. */
static void cork(struct http_conn *hc, int on);

static void response_done(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    if (hc->corked)
        cork(hc, 0);
    access_log(hc, r);
    count_response(hc, r);
    hc->nreq++;
    if (r->close_after || hc->stopping) {
        if (r->len > r->parsed || !r->body_done)
            linger(hc);
        else
            hc_close(hc);
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
        set_state(hc, HC_IDLE);
        return;
    }
    set_state(hc, HC_HEAD);
    process(hc);
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
            struct iovec iov[2];
            int cnt = 0;
            if (head)
                iov[cnt++] = (struct iovec){r->out + r->out_off, head};
            if (mem)
                iov[cnt++] = (struct iovec){(void *)(r->mem + r->mem_off), mem};
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
            /* More to come: the file, or the FIN of a closing connection,
             * which close() then sends in the same segment. */
            int more = r->file_off < r->file_end || r->close_after || hc->stopping;
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
                hc->deadline = now_ms() + srv_of(hc)->send_timeout_ms;
                watch(hc, EV_WRITE); /* yield: the loop calls back at once */
                return;
            }
            off_t left = r->file_end - r->file_off;
            size_t want = left > SEND_SLICE ? SEND_SLICE : (size_t)left;
            n = sendfile(hc->c->fd, r->file_fd, &r->file_off, want);
            if (n > 0 && (size_t)n < want)
                full = 1;
            if (n == 0) { /* the file shrank under us */
                log_warn(hc->c->peer, "file shrank while being sent; closing");
                r->close_after = 1;
                r->file_end = r->file_off;
                conn_count_error(hc->c);
                hc_close(hc);
                return;
            }
        } else {
            response_done(hc);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (sent_now) /* send_timeout runs between two writes */
                    hc->deadline = now_ms() + srv_of(hc)->send_timeout_ms;
                watch(hc, EV_WRITE);
                return;
            }
            if (errno == EINTR)
                continue;
            log_debug(hc->c->peer, "send: %s", strerror(errno));
            hc_close(hc);
            return;
        }
        sent_now += (size_t)n;
        conn_count_out(hc->c, (size_t)n);
        stat_add(&counters(hc)->bytes_out, (uint64_t)n);
        if (full) { /* a short write means the socket buffer is full: no
                       need to hear EAGAIN from another call */
            hc->deadline = now_ms() + srv_of(hc)->send_timeout_ms;
            watch(hc, EV_WRITE);
            return;
        }
    }
}

static void cork(struct http_conn *hc, int on)
{
    setsockopt(hc->c->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    hc->corked = (uint8_t)on;
}

static void start_write(struct http_conn *hc)
{
    set_state(hc, HC_WRITE);
    /* A file body bigger than a socket buffer goes out in several
     * sendfile calls: cork so that each one's tail waits to fill a whole
     * segment (nginx's tcp_nopush); uncorked when the response is sent. */
    if (hc->req->file_end - hc->req->file_off > 65536)
        cork(hc, 1);
    flush(hc);
}

/* ---- response building (called by handlers) ---- */

static int out_reserve(struct http_req *r, size_t more)
{
    if (r->out_len + more <= r->out_cap)
        return 0;
    size_t cap = r->out_cap * 2;
    while (cap < r->out_len + more)
        cap *= 2;
    char *p = realloc(r->out, cap);
    if (!p)
        return -1;
    r->out = p;
    r->out_cap = cap;
    return 0;
}

void http_resp_raw(struct http_req *r, const char *s, size_t len)
{
    if (out_reserve(r, len) < 0) {
        r->close_after = 1; /* a truncated head must not be reused */
        return;
    }
    memcpy(r->out + r->out_len, s, len);
    r->out_len += len;
}

static void out_str(struct http_req *r, const char *s)
{
    http_resp_raw(r, s, strlen(s));
}

static void out_u64(struct http_req *r, uint64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    http_resp_raw(r, p, (size_t)(tmp + sizeof tmp - p));
}

void http_resp_start(struct http_req *r, int status)
{
    /* A handler may replace a response it began (or an error may). */
    if (r->file_unref)
        r->file_unref(r->file_ref);
    if (r->mem_unref)
        r->mem_unref(r->mem_ref);
    r->file_unref = r->mem_unref = NULL;
    r->file_fd = -1;
    r->file_off = r->file_end = 0;
    r->mem = NULL;
    r->mem_len = r->mem_off = 0;
    r->out_len = r->out_off = 0;
    r->status = status;
    update_clock(r->hc->hw);
    out_str(r, "HTTP/1.1 ");
    out_u64(r, (uint64_t)status);
    out_str(r, " ");
    out_str(r, http_reason(status));
    out_str(r, "\r\n");
    out_str(r, r->srv->server_header);
    out_str(r, r->hc->hw->date_hdr);
}

void http_resp_header(struct http_req *r, const char *name, const char *value, size_t len)
{
    out_str(r, name);
    out_str(r, ": ");
    http_resp_raw(r, value, len);
    out_str(r, "\r\n");
}

void http_resp_headerf(struct http_req *r, const char *name, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        http_resp_header(r, name, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        r->close_after = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    http_resp_header(r, name, big, (size_t)n);
    free(big);
}

static void end_head(struct http_req *r, int has_length, uint64_t length)
{
    struct http_conn *hc = r->hc;
    if (has_length) {
        out_str(r, "Content-Length: ");
        out_u64(r, length);
        out_str(r, "\r\n");
    }
    if (!llhttp_should_keep_alive(&r->parser) || hc->stopping ||
        hc->nreq + 1 >= r->srv->keepalive_requests)
        r->close_after = 1;
    if (r->close_after)
        out_str(r, "Connection: close\r\n");
    else if (r->http_minor == 0)
        out_str(r, "Connection: keep-alive\r\n");
    out_str(r, "\r\n");
    r->responded = 1;
}

static int sends_body(const struct http_req *r)
{
    return r->method != HTTP_HEAD;
}

void http_resp_body(struct http_req *r, const char *ctype, const char *body, size_t len)
{
    if (ctype)
        http_resp_header(r, "Content-Type", ctype, strlen(ctype));
    end_head(r, 1, len);
    if (sends_body(r)) {
        http_resp_raw(r, body, len);
        r->body_bytes = len;
    }
}

void http_resp_body_ref(struct http_req *r, const char *body, size_t len, void *ref,
                        void (*unref)(void *))
{
    end_head(r, 1, len);
    if (!sends_body(r)) {
        unref(ref);
        return;
    }
    r->mem = body;
    r->mem_len = len;
    r->mem_ref = ref;
    r->mem_unref = unref;
    r->body_bytes = len;
}

void http_resp_body_file(struct http_req *r, int fd, off_t off, off_t len, void *ref,
                         void (*unref)(void *))
{
    end_head(r, 1, (uint64_t)len);
    if (!sends_body(r)) {
        unref(ref);
        return;
    }
    r->file_fd = fd;
    r->file_off = off;
    r->file_end = off + len;
    r->file_ref = ref;
    r->file_unref = unref;
    r->body_bytes = (uint64_t)len;
}

void http_resp_nobody(struct http_req *r)
{
    /* 1xx, 204 and 304 carry no Content-Length; other statuses say 0. */
    int s = r->status;
    end_head(r, !(s < 200 || s == 204 || s == 304), 0);
}

void http_error(struct http_req *r, int status, const char *extra)
{
    /* Each worker formats a status's page once. */
    struct http_worker *hw = r->hc->hw;
    int idx = status >= 100 && status < 600 ? status - 100 : 500 - 100;
    struct sbuf *page = &hw->errpages[idx];
    if (!page->len) {
        const char *reason = http_reason(status);
        sb_addf(page,
                "<!DOCTYPE html>\n<html><head><title>%d %s</title></head>"
                "<body><h1>%d %s</h1></body></html>\n",
                status, reason, status, reason);
    }
    if (status >= 400 && !r->responded)
        log_debug(r->hc->c->peer, "%d %s", status, http_reason(status));
    http_resp_start(r, status);
    if (extra)
        out_str(r, extra);
    http_resp_body(r, "text/html; charset=utf-8", page->p ? page->p : "", page->len);
}

size_t http_origin(struct http_req *r, char *out, size_t outlen)
{
    const struct http_str *host = &r->known[HK_HOST];
    if (host->p && host->len)
        return (size_t)snprintf(out, outlen, "http://%.*s", (int)host->len, host->p);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[64] = "localhost";
    if (getsockname(r->c->fd, (struct sockaddr *)&ss, &sl) == 0)
        sockaddr_text((struct sockaddr *)&ss, sl, addr, sizeof addr);
    return (size_t)snprintf(out, outlen, "http://%s", addr);
}

void http_redirect(struct http_req *r, int status, const char *location, size_t len)
{
    http_resp_start(r, status);
    http_resp_header(r, "Location", location, len);
    struct sbuf sb = {0};
    sb_adds(&sb, "<!DOCTYPE html>\n<html><head><title>Moved</title></head><body><a href=\"");
    sb_add_html(&sb, location, len);
    sb_adds(&sb, "\">moved here</a></body></html>\n");
    if (sb.failed)
        http_resp_body(r, "text/html; charset=utf-8", "", 0);
    else
        http_resp_body(r, "text/html; charset=utf-8", sb.p, sb.len);
    sb_free(&sb);
}

const char *http_method_name(const struct http_req *r)
{
    return llhttp_method_name((llhttp_method_t)r->method);
}

/* ---- parsing ---- */

static int fail(struct http_req *r, int status)
{
    if (!r->error_status)
        r->error_status = status;
    return -1;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct http_req *r = p->data;
    if (!r->url_len)
        r->url = (uint32_t)(at - r->buf);
    r->url_len += (uint32_t)len;
    if (r->url_len > r->srv->max_uri)
        return fail(r, 414);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct http_req *r = p->data;
    r->head_bytes += (unsigned)len;
    if (r->head_bytes > r->srv->max_header_size)
        return fail(r, 431);
    if (r->nhdrs == 0 || r->in_value) { /* a new header line */
        if (r->nhdrs >= r->srv->max_headers)
            return fail(r, 431);
        if (r->nhdrs == r->hdrs_cap) {
            struct http_hdr *h = realloc(r->hdrs, 2 * r->hdrs_cap * sizeof *h);
            if (!h)
                return fail(r, 500);
            r->hdrs = h;
            r->hdrs_cap *= 2;
        }
        r->hdrs[r->nhdrs++] = (struct http_hdr){(uint32_t)(at - r->buf), 0, 0, 0};
        r->in_value = 0;
    }
    r->hdrs[r->nhdrs - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct http_req *r = p->data;
    r->head_bytes += (unsigned)len;
    if (r->head_bytes > r->srv->max_header_size)
        return fail(r, 431);
    struct http_hdr *h = &r->hdrs[r->nhdrs - 1];
    if (!r->in_value) {
        h->value = (uint32_t)(at - r->buf);
        r->in_value = 1;
    }
    h->value_len += (uint32_t)len;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    /* We speak no protocol to upgrade to, so Upgrade is ignored (RFC 9110
     * 7.8) and the request is an ordinary one; CONNECT stays an upgrade so
     * that its connection closes after the answer. */
    if (p->method != HTTP_CONNECT)
        p->upgrade = 0;
    return HPE_PAUSED; /* routing happens in process(), outside the parser */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct http_req *r = p->data;
    r->body_seen += (long long)len;
    if (r->body_seen > r->body_max)
        return fail(r, 413);
    if (r->body_taken) {
        int st = r->handler->ops->on_body(r, at, len);
        if (st)
            return fail(r, st);
    }
    return 0;
}

/* llhttp 8 takes any two bytes after chunk data as its CRLF; a smuggling
 * vector, so pause after every chunk and look at them ourselves. */
static int on_chunk_complete(llhttp_t *p)
{
    struct http_req *r = p->data;
    r->chunk_check = 1;
    return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_complete = on_chunk_complete,
};

/* The request head is complete: route it, then decide about its body. */
static void on_head(struct http_conn *hc, struct http_req *r)
{
    llhttp_t *p = &r->parser;
    http_route(r);
    if (r->body_taken) {
        if (!(p->flags & F_CHUNKED) && (long long)p->content_length > r->body_max) {
            req_abort_body(r);
            r->close_after = 1;
            http_error(r, 413, NULL);
            return;
        }
        if (r->known[HK_EXPECT].p) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            /* The socket is idle while we read a request, so this small
             * write does not block in practice; if it does not go out
             * whole, the client would wait forever: close. */
            ssize_t w = send(hc->c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL);
            if (w != (ssize_t)sizeof cont - 1) {
                req_abort_body(r);
                r->close_after = 1;
                http_error(r, 500, NULL);
                return;
            }
            conn_count_out(hc->c, (size_t)w);
        }
    }
}

/* Answers a request that failed while being read, and closes after. */
static void refuse(struct http_conn *hc, int status)
{
    struct http_req *r = hc->req;
    req_abort_body(r);
    r->close_after = 1;
    if (status == 400 || status == 413 || status == 414 || status == 431)
        log_info(hc->c->peer, "request refused: %d %s%s%s", status, http_reason(status),
                 r->error_status ? "" : ": ",
                 r->error_status ? "" : llhttp_get_error_reason(&r->parser));
    conn_count_error(hc->c);
    http_error(r, status, NULL);
    start_write(hc);
}

static void process(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    for (;;) {
        size_t start = r->parsed;
        llhttp_errno_t err = llhttp_execute(&r->parser, r->buf + r->parsed, r->len - r->parsed);
        if (err == HPE_OK) {
            r->parsed = r->len;
            if (hc->state == HC_BODY) {
                /* Body bytes are handed on; keep the last two for the
                 * chunk check (a CRLF may straddle two reads). */
                for (size_t i = r->len - start > 2 ? r->len - 2 : start; i < r->len; i++) {
                    r->tail[0] = r->tail[1];
                    r->tail[1] = r->buf[i];
                }
                r->len = r->parsed = r->head_end;
            } else if (r->len >= (size_t)r->srv->max_uri + r->srv->max_header_size + 1024) {
                refuse(hc, r->url_len && !r->nhdrs ? 414 : 431);
                return;
            }
            if (hc->state == HC_IDLE)
                set_state(hc, HC_HEAD);
            watch(hc, EV_READ);
            return;
        }
        if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
            refuse(hc, r->error_status ? r->error_status : 400);
            return;
        }
        size_t pos = (size_t)(llhttp_get_error_pos(&r->parser) - r->buf);
        if (err == HPE_PAUSED_UPGRADE) /* only CONNECT, refused in on_head */
            llhttp_resume_after_upgrade(&r->parser);
        else
            llhttp_resume(&r->parser);
        r->parsed = pos;
        if (r->chunk_check) {
            r->chunk_check = 0;
            char cr = pos - 2 >= start ? r->buf[pos - 2] : r->tail[2 - (start - (pos - 2))];
            char lf = pos - 1 >= start ? r->buf[pos - 1] : r->tail[1];
            if (cr != '\r' || lf != '\n') {
                refuse(hc, 400);
                return;
            }
            continue;
        }
        if (hc->state != HC_BODY) { /* end of the head */
            r->head_end = pos;
            set_state(hc, HC_BODY);
            on_head(hc, r);
            if (r->responded && r->expects_body && !r->body_taken) {
                r->close_after = 1; /* not reading a body nobody wants */
                start_write(hc);
                return;
            }
            continue;
        }
        /* end of the message */
        if (r->body_taken) {
            r->body_done = 1;
            r->handler->ops->on_body_end(r);
        }
        r->body_done = 1;
        if (!r->responded)
            http_error(r, 500, NULL);
        start_write(hc);
        return;
    }
}

static void on_readable(struct http_conn *hc)
{
    if (hc->state == HC_LINGER) {
        char sink[16384];
        ssize_t n = read(hc->c->fd, sink, sizeof sink);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            hc_close(hc);
        return;
    }
    if (!hc->req && !(hc->req = req_get(hc))) {
        log_error(hc->c->peer, "out of memory for a request; closing");
        hc_close(hc);
        return;
    }
    struct http_req *r = hc->req;
    if (r->len == r->cap) {
        char *b = realloc(r->buf, r->cap * 2);
        if (!b) {
            log_error(hc->c->peer, "out of memory for a request; closing");
            hc_close(hc);
            return;
        }
        r->buf = b;
        r->cap *= 2;
    }
    ssize_t n = read(hc->c->fd, r->buf + r->len, r->cap - r->len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            if (!r->len)
                req_put(hc);
            watch(hc, EV_READ);
            return;
        }
        log_debug(hc->c->peer, "read: %s", strerror(errno));
        hc_close(hc);
        return;
    }
    if (n == 0) {
        if (r->len || hc->state == HC_BODY)
            log_info(hc->c->peer, "client closed the connection mid-request");
        hc_close(hc);
        return;
    }
    conn_count_in(hc->c, (size_t)n);
    stat_add(&counters(hc)->bytes_in, (uint64_t)n);
    r->len += (size_t)n;
    if (hc->state == HC_BODY)
        set_state(hc, HC_BODY); /* body_timeout is between reads */
    process(hc);
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct http_conn *hc = arg;
    if (what & EV_WRITE)
        flush(hc);
    else if (what & EV_READ)
        on_readable(hc);
}

/* ---- timeouts ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_worker *hw = arg;
    uint64_t now = now_ms();
    for (struct http_conn *hc = hw->conns, *next; hc; hc = next) {
        next = hc->next;
        if (!hc->deadline || now < hc->deadline)
            continue;
        switch (hc->state) {
        case HC_HEAD:
        case HC_BODY:
            log_info(hc->c->peer, "request timed out while %s",
                     hc->state == HC_HEAD ? "reading the head" : "reading the body");
            refuse(hc, 408);
            break;
        case HC_WRITE:
            log_info(hc->c->peer, "send timed out: the client stopped reading");
            conn_count_error(hc->c);
            hc_close(hc);
            break;
        default: /* idle keep-alive, or a lingering close, ran out */
            hc_close(hc);
        }
    }
}

/* ---- protocol callbacks ---- */

void *http_worker_start(struct worker *w)
{
    struct http_worker *hw = calloc(1, sizeof *hw);
    if (!hw)
        return NULL;
    hw->w = w;
    hw->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, hw);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!hw->tick || event_add(hw->tick, &tv) < 0) {
        if (hw->tick)
            event_free(hw->tick);
        free(hw);
        return NULL;
    }
    return hw;
}

void http_worker_stop(void *state)
{
    struct http_worker *hw = state;
    if (!hw)
        return;
    event_free(hw->tick);
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

void http_accept(void *state, struct conn *c)
{
    struct http_worker *hw = state;
    struct http_conn *hc = hw ? calloc(1, sizeof *hc) : NULL;
    if (!hc) {
        log_error(c->peer, "out of memory accepting a connection");
        conn_close(c);
        return;
    }
    hc->c = c;
    hc->hw = hw;
    c->proto_ctx = hc;
    hc->next = hw->conns;
    if (hw->conns)
        hw->conns->prev = hc;
    hw->conns = hc;
    struct http_counters *ct = counters(hc);
    stat_add(&ct->accepted, 1);
    stat_add(&ct->active, 1);
    set_state(hc, HC_IDLE);
    /* The listener defers accept until the request is there: read it now,
     * and register with epoll only if we have to wait (a request answered
     * with Connection: close then never touches epoll). */
    on_readable(hc);
}

void http_closed(void *state, struct conn *c)
{
    struct http_worker *hw = state;
    struct http_conn *hc = c->proto_ctx;
    if (!hc)
        return;
    if (hc->req && hc->req->status == 0 && hc->req->len)
        stat_add(&counters(hc)->status[0], 1);
    req_put(hc);
    if (hc->watching)
        event_del(&hc->ev);
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        hw->conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    stat_sub(&counters(hc)->active, 1);
    c->proto_ctx = NULL;
    free(hc);
}

void http_stopping(void *state, struct conn *c, unsigned grace_ms)
{
    (void)state;
    (void)grace_ms;
    struct http_conn *hc = c->proto_ctx;
    hc->stopping = 1; /* the next answer says Connection: close */
    /* Closing an idle keep-alive connection races with a request the client
     * may be sending on it, and a client that does not retry sees a failure.
     * When the whole server stops, that is the price of stopping promptly
     * (nginx pays it too). When one worker is drained for scaling, the
     * server goes on: idle connections stay until their next answer (with
     * Connection: close), their keep-alive timeout or the grace period. */
    if (hc->state == HC_IDLE && !c->w->handing_over)
        hc_close(hc);
}

void http_describe(void *state, struct conn *c, char *buf, size_t len)
{
    (void)state;
    const struct http_conn *hc = c->proto_ctx;
    if (!hc)
        return;
    const struct http_req *r = hc->req;
    static const char *const states[] = {"idle", "reading head", "reading body", "sending",
                                         "closing"};
    if (r && r->target.p)
        snprintf(buf, len, "%s %s %.*s (request %u)", states[hc->state], http_method_name(r),
                 (int)(r->target.len > 96 ? 96 : r->target.len), r->target.p, hc->nreq + 1);
    else
        snprintf(buf, len, "%s (%u request%s)", states[hc->state], hc->nreq,
                 hc->nreq == 1 ? "" : "s");
}
