/*
 * The router: what the request head says (known headers, target, path),
 * the virtual host it is for, and the handler chain, first match first.
 * Called by http_conn.c once a head is complete; worker thread only.
 */
#include "core/conn.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "core/worker.h"
#include "protocols/http/http_conn.h"
#include "protocols/http/http_util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    size_t len;
    enum http_known k;
} known_names[] = {
    {LIT("host"), HK_HOST},
    {LIT("expect"), HK_EXPECT},
    {LIT("if-modified-since"), HK_IF_MODIFIED_SINCE},
    {LIT("if-none-match"), HK_IF_NONE_MATCH},
    {LIT("if-range"), HK_IF_RANGE},
    {LIT("range"), HK_RANGE},
    {LIT("accept-encoding"), HK_ACCEPT_ENCODING},
    {LIT("authorization"), HK_AUTHORIZATION},
    {LIT("referer"), HK_REFERER},
    {LIT("user-agent"), HK_USER_AGENT},
};

/* Returns 0, or an HTTP status for a request that must be refused. */
static int classify_headers(struct http_req *r)
{
    /* llhttp accepts obs-fold (a header line that starts with white space);
     * RFC 9112 lets a server reject it, and it is a smuggling vector. */
    for (const char *p = r->buf, *end = r->buf + r->head_end;
         (p = memchr(p, '\n', (size_t)(end - p))) && p + 1 < end; p++)
        if (p[1] == ' ' || p[1] == '\t')
            return 400;
    for (unsigned i = 0; i < r->nhdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        const char *name = r->buf + h->name;
        for (size_t k = 0; k < sizeof known_names / sizeof *known_names; k++) {
            if (known_names[k].len != h->name_len ||
                strncasecmp(name, known_names[k].name, h->name_len) != 0)
                continue;
            struct http_str *slot = &r->known[known_names[k].k];
            if (slot->p && known_names[k].k == HK_HOST)
                return 400; /* RFC 9112 3.2: more than one Host */
            /* Trailing white space is not part of a field value. */
            const char *v = r->buf + h->value;
            size_t vl = h->value_len;
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            slot->p = v;
            slot->len = vl;
            break;
        }
    }
    if (r->http_minor == 1 && !r->known[HK_HOST].p)
        return 400; /* RFC 9112 3.2: HTTP/1.1 requires Host */
    return 0;
}

static int default_match(const struct http_handler *h, const char *path)
{
    return strncmp(path, h->path, h->path_len) == 0;
}

void http_route(struct http_req *r)
{
    llhttp_t *p = &r->parser;
    r->method = llhttp_get_method(p);
    r->http_minor = llhttp_get_http_minor(p);
    r->target = (struct http_str){r->buf + r->url, r->url_len};
    r->expects_body = (p->flags & F_CHUNKED) || p->content_length > 0;
    r->body_max = r->srv->max_body;
    if (llhttp_get_http_major(p) != 1) {
        http_error(r, 505, NULL);
        return;
    }
    if (r->method == HTTP_CONNECT) { /* not a proxy; and a tunnel would follow */
        r->close_after = 1;
        http_error(r, 405, NULL);
        return;
    }
    int st = classify_headers(r);
    if (st) {
        r->close_after = 1;
        http_error(r, st, NULL);
        return;
    }
    /* origin-form, or absolute-form whose authority then stands for Host */
    const char *t = r->target.p;
    size_t tl = r->target.len;
    size_t scheme = tl > 7 && strncasecmp(t, LIT("http://")) == 0 ? sizeof "http://" - 1 : 0;
    if (!scheme && tl > 8 && strncasecmp(t, LIT("https://")) == 0)
        scheme = sizeof "https://" - 1;
    if (scheme) {
        const char *auth = t + scheme;
        const char *slash = memchr(auth, '/', (size_t)(t + tl - auth));
        r->known[HK_HOST] = (struct http_str){auth, (size_t)((slash ? slash : t + tl) - auth)};
        t = slash ? slash : "/";
        tl = slash ? (size_t)(r->target.p + tl - slash) : 1;
    }
    const char *q = memchr(t, '?', tl);
    size_t plen = q ? (size_t)(q - t) : tl;
    if (q)
        r->query = (struct http_str){q + 1, (size_t)(t + tl - q - 1)};
    r->path = malloc(plen + 2);
    if (!r->path) {
        http_error(r, 500, NULL);
        return;
    }
    long n = http_path_normalize(t, plen, r->path);
    if (n < 0) {
        if (-n == 400 || -n == 403)
            log_info(r->c->peer, "refused path %.*s (%ld)", (int)plen, t, -n);
        http_error(r, (int)-n, NULL);
        return;
    }
    const struct http_str *host = &r->known[HK_HOST];
    r->vhost = http_vhost_match(r->srv, host->p ? host->p : "", host->len);
    const struct http_str *expect = &r->known[HK_EXPECT];
    if (expect->p && !(expect->len == sizeof "100-continue" - 1 &&
                       strncasecmp(expect->p, LIT("100-continue")) == 0)) {
        http_error(r, 417, NULL);
        return;
    }
    int method_mismatch = 0;
    struct http_counters *ct = http_counters_slot(r->srv->stats, r->c->w->id);
    for (size_t i = 0; r->vhost && i < r->vhost->nhandlers; i++) {
        struct http_handler *h = &r->vhost->handlers[i];
        if (!(h->ops->match ? h->ops->match(h, r->path) : default_match(h, r->path)))
            continue;
        if (h->methods && !(h->methods & (1ull << r->method))) {
            method_mismatch = 1;
            continue;
        }
        r->handler = h;
        stat_add(&ct->hits[h->type], 1);
        enum http_action a = h->ops->on_req(h, r);
        if (a == HTTP_NEXT) {
            r->handler = NULL;
            continue;
        }
        if (a == HTTP_BODY || a == HTTP_ASYNC) {
            if (h->max_body)
                r->body_max = h->max_body;
            r->body_taken = r->expects_body || a == HTTP_BODY;
            r->held = a == HTTP_ASYNC;
        }
        break;
    }
    if (!r->handler && !r->responded) {
        if (method_mismatch)
            http_error(r, 405, NULL);
        else
            http_error(r, 404, NULL);
    }
}
