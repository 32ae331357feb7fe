/*
 * Reading a request with llhttp (strict mode), one request at a time.
 *
 * llhttp pauses at the end of the head (so routing happens outside its
 * callbacks) and at the end of the message; a pipelined request waits in
 * the input buffer until the response before it is sent, so responses go
 * out in order. The head stays in place in the input buffer until its
 * response is sent (handlers and the access log point into it); body bytes
 * are handed on and dropped.
 *
 * Limits (max_uri, max_header_size, max_headers, max_body) are checked as
 * bytes arrive. Request smuggling: llhttp refuses CL with TE, duplicate or
 * bad CL, bad chunk sizes, bare LF and NUL; the router refuses obs-fold;
 * and since llhttp 8 takes any two bytes after chunk data as its CRLF, the
 * parser pauses after every chunk so that we look at them ourselves.
 */
#include "core/conn.h"
#include "core/log.h"
#include "protocols/http/http_conn.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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
            /* hdrs_cap starts at HDRS_INITIAL (http_conn.c), never 0 */
            /* NOLINTNEXTLINE(clang-analyzer-optin.portability.UnixAPI) */
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

const llhttp_settings_t http_parser_settings = {
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
            http_req_abort_body(r);
            r->close_after = 1;
            http_error(r, 413, NULL);
            return;
        }
        if (r->known[HK_EXPECT].p) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            /* The socket is idle while we read a request, so this small
             * write does not block in practice; if it does not go out
             * whole, the client would wait forever: close. */
            ssize_t w;
            if (hc->tls) { /* sealed with the batch: a rest waits for the response's turn */
                w = conn_seal(hc->c, cont, sizeof cont - 1);
                if (w == (ssize_t)sizeof cont - 1 && conn_flush(hc->c) < 0 && errno != EAGAIN)
                    w = -1;
            } else {
                short want;
                w = conn_write(hc->c, cont, sizeof cont - 1, &want);
            }
            if (w != (ssize_t)sizeof cont - 1) {
                http_req_abort_body(r);
                r->close_after = 1;
                http_error(r, 500, NULL);
                return;
            }
            conn_count_out(hc->c, (size_t)w);
        }
    }
}

void http_refuse(struct http_conn *hc, int status)
{
    struct http_req *r = hc->req;
    http_req_abort_body(r);
    r->close_after = 1;
    if (status == 400 || status == 413 || status == 414 || status == 431)
        log_info(hc->c->peer, "request refused: %d %s%s%s", status, http_reason(status),
                 r->error_status ? "" : ": ",
                 r->error_status ? "" : llhttp_get_error_reason(&r->parser));
    conn_count_error(hc->c);
    http_error(r, status, NULL);
    http_start_write(hc);
}

/* RFC 9112 §2.2: a CR without its LF in the head is refused. llhttp
 * refuses it in a request line, a name or a value, but takes one that is
 * a whole empty value ("X: \r\r\n") or that comes before the head's end
 * ("\r\r\n"): and then the head does not end in CRLF CRLF where llhttp
 * stops, so only such a head is searched. */
static __attribute__((noinline)) int bare_cr(const char *p, size_t n)
{
    const char *end = p + n;
    while ((p = memchr(p, '\r', (size_t)(end - p)))) {
        if (p + 1 == end || p[1] != '\n')
            return 1;
        p += 2;
    }
    return 0;
}

void http_process(struct http_conn *hc)
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
                http_refuse(hc, r->url_len && !r->nhdrs ? 414 : 431);
                return;
            }
            if (hc->state == HC_IDLE)
                http_set_state(hc, HC_HEAD);
            if (r->body_paused) { /* the handler's back-pressure, not the client's delay */
                hc->deadline = 0;
                http_watch(hc, 0);
            } else {
                http_watch(hc, EV_READ);
            }
            return;
        }
        if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
            http_refuse(hc, r->error_status ? r->error_status : 400);
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
                http_refuse(hc, 400);
                return;
            }
            continue;
        }
        if (hc->state != HC_BODY) { /* end of the head */
            if (__builtin_expect(pos < 4 || memcmp(r->buf + pos - 4, "\r\n\r\n", 4) != 0, 0) &&
                bare_cr(r->buf, pos)) {
                log_info(hc->c->peer, "a CR without its LF in the request head; refused");
                http_refuse(hc, 400);
                return;
            }
            r->head_end = pos;
            http_set_state(hc, HC_BODY);
            on_head(hc, r);
            if (r->responded && r->expects_body && !r->body_taken) {
                r->close_after = 1; /* not reading a body nobody wants */
                http_start_write(hc);
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
        if (!r->responded) {
            if (r->held) { /* HTTP_ASYNC: the handler answers when it can; the
                            * read event stays until input arrives (io_cb) */
                http_set_state(hc, HC_WAIT);
                return;
            }
            http_error(r, 500, NULL);
        }
        http_start_write(hc);
        return;
    }
}
