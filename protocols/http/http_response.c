/*
 * The response API that handlers call (http.h): a head built into the
 * request's output buffer, and a body from memory, a reference-counted
 * buffer (cached file contents) or a file (sent with sendfile by
 * http_conn.c). The Date header and the error pages are made once per
 * second and once per status, per worker.
 */
#include "core/conn.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/worker.h"
#include "protocols/http/http_conn.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

void http_update_clock(struct http_worker *hw)
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

void http_resp_forget(struct http_req *r)
{
    if (r->file_unref)
        r->file_unref(r->file_ref);
    if (r->mem_unref)
        r->mem_unref(r->mem_ref);
    r->file_unref = r->mem_unref = NULL;
    r->file_ref = r->mem_ref = NULL;
    r->file_fd = -1;
    r->file_off = r->file_end = 0;
    r->mem = NULL;
    r->mem_len = r->mem_off = 0;
}

void http_resp_start_reason(struct http_req *r, int status, const char *reason, size_t len)
{
    /* A handler may replace a response it began (or an error may). */
    http_resp_forget(r);
    r->out_len = r->out_off = 0;
    r->status = status;
    http_update_clock(r->hc->hw);
    out_str(r, "HTTP/1.1 ");
    out_u64(r, (uint64_t)status);
    out_str(r, " ");
    http_resp_raw(r, reason, len);
    out_str(r, "\r\n");
    out_str(r, r->srv->server_header);
    out_str(r, r->hc->hw->date_hdr);
    /* RFC 6797: only over TLS (a plain response's would be ignored, or worse) */
    if (__builtin_expect(r->srv->hsts_header != NULL, 0) && r->hc->tls)
        out_str(r, r->srv->hsts_header);
}

void http_resp_start(struct http_req *r, int status)
{
    const char *reason = http_reason(status);
    http_resp_start_reason(r, status, reason, strlen(reason));
}

void http_resp_header(struct http_req *r, const char *name, const char *value, size_t len)
{
    out_str(r, name);
    out_str(r, ": ");
    http_resp_raw(r, value, len);
    out_str(r, "\r\n");
}

/* A CR or LF would end the field and let the rest forge headers or a body
 * (a Location made of a decoded path, say): every control character is
 * percent-encoded, which a URI means anyway. (A tab is a field value's own
 * white space.) */
void http_resp_header_untrusted(struct http_req *r, const char *name, const char *value, size_t len)
{
    size_t i = 0;
    while (i < len && ((unsigned char)value[i] >= 0x20 || value[i] == '\t') && value[i] != 0x7f)
        i++;
    if (i == len) {
        http_resp_header(r, name, value, len);
        return;
    }
    log_warn(r->hc->c->peer, "control characters in a response header (%s) percent-encoded", name);
    out_str(r, name);
    out_str(r, ": ");
    size_t from = 0;
    for (; i < len; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch >= 0x20 || ch == '\t') && ch != 0x7f)
            continue;
        char esc[4];
        snprintf(esc, sizeof esc, "%%%02X", ch);
        http_resp_raw(r, value + from, i - from);
        http_resp_raw(r, esc, 3);
        from = i + 1;
    }
    http_resp_raw(r, value + from, len - from);
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
    /* Answered before a body nobody takes: the connection closes after this
     * answer without reading the body (http_parse.c), so say so. */
    if (r->expects_body && !r->body_taken)
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

/* ---- HTTP_ASYNC ---- */

void http_resume(struct http_req *r)
{
    r->held = 0;
    if (!r->body_done)
        r->close_after = 1; /* the rest of the body is not read */
    http_kick(r->hc);
}

void http_stream_begin(struct http_req *r, long long length)
{
    int s = r->status;
    int bodiless = r->method == HTTP_HEAD || s < 200 || s == 204 || s == 304;
    r->streaming = 1;
    if (bodiless || length >= 0) {
        end_head(r, length >= 0, length >= 0 ? (uint64_t)length : 0);
        r->body_bytes = 0;
        if (bodiless)
            r->stream_ended = 1; /* http_stream_end is then a no-op */
        return;
    }
    if (r->http_minor >= 1) {
        out_str(r, "Transfer-Encoding: chunked\r\n");
        r->stream_chunks = 1;
    } else {
        r->close_after = 1; /* HTTP/1.0: the end of the body is the close */
    }
    end_head(r, 0, 0);
}

int http_stream_write(struct http_req *r, const char *data, size_t len)
{
    if (!len || r->stream_ended)
        return 0;
    char size[24];
    int n = r->stream_chunks ? snprintf(size, sizeof size, "%zx\r\n", len) : 0;
    if (out_reserve(r, (size_t)n + len + 2) < 0) {
        log_error(r->c->peer, "out of memory for a streamed response; closing");
        r->close_after = 1;
        r->stream_ended = 1;
        shutdown(r->c->fd, SHUT_RDWR); /* the flush fails: the connection closes */
        http_kick(r->hc);
        return -1;
    }
    memcpy(r->out + r->out_len, size, (size_t)n);
    memcpy(r->out + r->out_len + n, data, len);
    r->out_len += (size_t)n + len;
    if (r->stream_chunks) {
        memcpy(r->out + r->out_len, "\r\n", 2);
        r->out_len += 2;
    }
    r->body_bytes += len;
    http_kick(r->hc);
    return 0;
}

void http_stream_end(struct http_req *r)
{
    if (!r->stream_ended && r->stream_chunks)
        out_str(r, "0\r\n\r\n");
    r->stream_ended = 1;
    r->held = 0;
    http_kick(r->hc);
}

size_t http_stream_pending(const struct http_req *r)
{
    return r->out_len - r->out_off;
}

void http_body_pause(struct http_req *r)
{
    r->body_paused = 1;
    if (r->hc->state == HC_BODY) {
        r->hc->deadline = 0;
        http_watch(r->hc, 0);
    }
}

void http_body_resume(struct http_req *r)
{
    if (!r->body_paused)
        return;
    r->body_paused = 0;
    if (r->hc->state == HC_BODY) {
        http_set_state(r->hc, HC_BODY);
        http_watch(r->hc, EV_READ);
    }
}

void http_tunnel(struct http_req *r)
{
    out_str(r, "\r\n"); /* 101: the handler wrote Connection and Upgrade */
    r->responded = 1;
    r->streaming = r->stream_ended = r->tunnel = 1;
    http_kick(r->hc);
}

size_t http_origin(struct http_req *r, char *out, size_t outlen)
{
    const struct http_str *host = &r->known[HK_HOST];
    const char *scheme = r->c->ssl ? "https" : "http";
    if (host->p && host->len)
        return (size_t)snprintf(out, outlen, "%s://%.*s", scheme, (int)host->len, host->p);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[64] = "localhost";
    if (getsockname(r->c->fd, (struct sockaddr *)&ss, &sl) == 0)
        sockaddr_text((struct sockaddr *)&ss, sl, addr, sizeof addr);
    return (size_t)snprintf(out, outlen, "%s://%s", scheme, addr);
}

void http_redirect(struct http_req *r, int status, const char *location, size_t len)
{
    http_resp_start(r, status);
    http_resp_header_untrusted(r, "Location", location, len);
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

void *http_handler_ctx(const struct http_req *r, const struct http_handler *h)
{
    return http_ctx_handler(r->hc->ctx, h);
}
