/*
 * redirect handler: requests under the handler's path prefix go to "to"
 * plus the rest of the path; with "pattern" (a POSIX extended regular
 * expression on the path, $1..$9 in "to"), only matching paths do, to "to"
 * with the groups filled in. Status 301, 302, 307 or 308.
 *
 * A compiled regex_t is not shared between threads (glibc locks inside
 * regexec), so each worker compiles its own: the handler's per-worker
 * context (http.h's ctx_init).
 */
#include "core/conn.h"
#include "core/log.h"
#include "protocols/http/http.h"
#include "protocols/http/http_util.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>

struct redirect_conf {
    char *to;
    char *pattern; /* NULL: prefix mode */
    int status;
    int keep_query;
    int to_https; /* the same host and target, over https */
    int https_port;
};

/* https://HOST[:PORT]TARGET: the host the client asked for (without its
 * port), else the address it reached. */
static void https_location(struct http_req *r, const struct redirect_conf *rc, struct sbuf *loc)
{
    const struct http_str *host = &r->known[HK_HOST];
    char addr[300];
    size_t hl;
    if (host->p && host->len) {
        const char *end = host->p + host->len, *colon;
        if (host->p[0] == '[')
            colon =
                memchr(host->p, ']', host->len) ? (char *)memchr(host->p, ']', host->len) + 1 : end;
        else
            colon = memchr(host->p, ':', host->len) ? memchr(host->p, ':', host->len) : end;
        hl = (size_t)(colon - host->p);
        if (hl >= sizeof addr)
            hl = sizeof addr - 1;
        memcpy(addr, host->p, hl);
    } else {
        http_origin(r, addr, sizeof addr); /* "http://ip:port" or "https://..." */
        char *a = strstr(addr, "://") ? strstr(addr, "://") + 3 : addr, *colon = strrchr(a, ':');
        hl = (size_t)((colon && colon > a ? colon : a + strlen(a)) - a);
        memmove(addr, a, hl);
    }
    sb_adds(loc, "https://");
    sb_add(loc, addr, hl);
    if (rc->https_port != 443)
        sb_addf(loc, ":%d", rc->https_port);
    if (r->target.len && r->target.p[0] == '/')
        sb_add(loc, r->target.p, r->target.len);
    else
        sb_adds(loc, "/");
}

static void expand(struct sbuf *sb, const char *to, const char *subject, const regmatch_t *m)
{
    for (const char *p = to; *p; p++) {
        if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            int i = p[1] - '0';
            if (m[i].rm_so >= 0)
                sb_add(sb, subject + m[i].rm_so, (size_t)(m[i].rm_eo - m[i].rm_so));
            p++;
        } else {
            sb_add(sb, p, 1);
        }
    }
}

static enum http_action redirect_on_req(struct http_handler *h, struct http_req *r)
{
    struct redirect_conf *rc = h->conf;
    struct sbuf loc = {0};
    if (rc->to_https) {
        https_location(r, rc, &loc);
    } else if (rc->pattern) {
        regmatch_t m[10];
        if (regexec(http_handler_ctx(r, h), r->path, 10, m, 0) != 0)
            return HTTP_NEXT;
        expand(&loc, rc->to, r->path, m);
    } else {
        sb_adds(&loc, rc->to);
        const char *rest = r->path + h->path_len;
        sb_add_urlpath(&loc, rest, strlen(rest));
    }
    if (rc->keep_query && r->query.p && !rc->to_https) { /* (the target has it) */
        sb_adds(&loc, strchr(loc.p ? loc.p : "", '?') ? "&" : "?");
        sb_add(&loc, r->query.p, r->query.len);
    }
    if (loc.failed)
        http_error(r, 500, NULL);
    else
        http_redirect(r, rc->status, loc.p ? loc.p : "/", loc.len);
    sb_free(&loc);
    return HTTP_DONE;
}

static int redirect_ctx_init(struct http_handler *h, struct worker *w, void **ctx)
{
    (void)w;
    const struct redirect_conf *rc = h->conf;
    regex_t *re = NULL;
    if (rc->pattern) {
        /* It compiled when the configuration was checked. */
        if (!(re = malloc(sizeof *re)) || regcomp(re, rc->pattern, REG_EXTENDED) != 0) {
            log_error(NULL, "redirect %s: cannot compile its pattern on this worker", h->path);
            free(re);
            return -1;
        }
    }
    *ctx = re;
    return 0;
}

static void redirect_ctx_dispose(struct http_handler *h, void *ctx)
{
    (void)h;
    regfree(ctx);
    free(ctx);
}

static void redirect_free(struct http_handler *h)
{
    struct redirect_conf *rc = h->conf;
    if (!rc)
        return;
    free(rc->to);
    free(rc->pattern);
    free(rc);
}

static int redirect_parse(struct cfg_ctx *ctx, const config_setting_t *block,
                          struct http_handler *h)
{
    struct redirect_conf *rc = calloc(1, sizeof *rc);
    if (!rc)
        return cfg_error(ctx, block, "out of memory");
    h->conf = rc;
    const char *to = NULL, *pattern = NULL;
    long long status = 301, port = 443;
    rc->keep_query = 1;
    if (cfg_bool(ctx, block, "to_https", &rc->to_https) < 0 ||
        cfg_int(ctx, block, "https_port", 1, 65535, &port) < 0)
        return -1;
    rc->https_port = (int)port;
    if (rc->to_https) {
        if (config_setting_get_member(block, "to") || config_setting_get_member(block, "pattern"))
            return cfg_error(ctx, block, "a redirect has 'to_https' or 'to', not both");
        if (cfg_int(ctx, block, "status", 301, 308, &status) < 0)
            return -1;
        if (status != 301 && status != 302 && status != 307 && status != 308)
            return cfg_error(ctx, config_setting_get_member(block, "status"),
                             "redirect status must be 301, 302, 307 or 308");
        rc->status = (int)status;
        return 0;
    }
    if (cfg_string(ctx, block, "to", &to) < 0 || cfg_string(ctx, block, "pattern", &pattern) < 0 ||
        cfg_int(ctx, block, "status", 301, 308, &status) < 0 ||
        cfg_bool(ctx, block, "keep_query", &rc->keep_query) < 0)
        return -1;
    if (status != 301 && status != 302 && status != 307 && status != 308)
        return cfg_error(ctx, config_setting_get_member(block, "status"),
                         "redirect status must be 301, 302, 307 or 308");
    if (!to || !*to || strpbrk(to, "\r\n"))
        return cfg_error(ctx, block, "a redirect handler needs 'to', a location");
    rc->status = (int)status;
    if (!(rc->to = strdup(to)))
        return cfg_error(ctx, block, "out of memory");
    if (pattern) {
        regex_t re;
        int rcomp = regcomp(&re, pattern, REG_EXTENDED);
        if (rcomp != 0) {
            char msg[128];
            regerror(rcomp, &re, msg, sizeof msg);
            return cfg_error(ctx, config_setting_get_member(block, "pattern"),
                             "bad pattern '%s': %s", pattern, msg);
        }
        regfree(&re);
        if (!(rc->pattern = strdup(pattern)))
            return cfg_error(ctx, block, "out of memory");
    }
    return 0;
}

static const char *const redirect_keys[] = {"to",       "pattern",    "status", "keep_query",
                                            "to_https", "https_port", NULL};

const struct http_handler_ops http_redirect_ops = {
    .type = "redirect",
    .keys = redirect_keys,
    .parse = redirect_parse,
    .free = redirect_free,
    .on_req = redirect_on_req,
    .ctx_init = redirect_ctx_init,
    .ctx_dispose = redirect_ctx_dispose,
};
