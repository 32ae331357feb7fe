/*
 * The `upstreams` section and the registry of server records. Parsing runs
 * on the supervisor (or main, for -t); records are made there and read by
 * any thread afterwards.
 */
#include "protocols/http/proxy/upstream.h"

#include "core/config.h"
#include "core/listener.h"
#include "protocols/http/http.h"

#include <arpa/inet.h>
#include <event2/util.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* ---- records ---- */

#define PX_RECS_MAX 4096

static pthread_mutex_t recs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct px_rec *_Atomic recs[PX_RECS_MAX];
static _Atomic unsigned nrecs;

struct px_rec *px_rec_for(const char *upstream, const char *server)
{
    pthread_mutex_lock(&recs_lock);
    unsigned n = atomic_load(&nrecs);
    struct px_rec *r = NULL;
    for (unsigned i = 0; i < n; i++) {
        struct px_rec *x = atomic_load(&recs[i]);
        if (strcmp(x->upstream, upstream) == 0 && strcmp(x->server, server) == 0) {
            r = x;
            break;
        }
    }
    if (!r && n < PX_RECS_MAX && (r = aligned_alloc(64, sizeof *r))) {
        memset(r, 0, sizeof *r);
        r->upstream = strdup(upstream);
        r->server = strdup(server);
        if (!r->upstream || !r->server) {
            free(r->upstream);
            free(r->server);
            free(r);
            r = NULL;
        } else {
            r->id = n;
            atomic_store(&recs[n], r);
            atomic_store(&nrecs, n + 1); /* published after the record */
        }
    }
    pthread_mutex_unlock(&recs_lock);
    return r;
}

struct px_rec *px_rec_by_id(unsigned id)
{
    return id < atomic_load(&nrecs) ? atomic_load(&recs[id]) : NULL;
}

unsigned px_rec_count(void)
{
    return atomic_load(&nrecs);
}

const char *px_err_text(enum px_err e)
{
    static const char *const text[PXE_COUNT] = {
        "",
        "connection refused",
        "cannot connect",
        "connect timed out",
        "send timed out",
        "read timed out",
        "connection reset or closed early",
        "bad response",
        "name not resolved",
        "check: unexpected status",
    };
    return e < PXE_COUNT ? text[e] : "?";
}

/* ---- servers ---- */

int px_server_parse(const char *text, const char *base_dir, struct px_server *out, char *err,
                    size_t errlen)
{
    struct listen_addr a;
    memset(out, 0, sizeof *out);
    out->weight = 1;
    if (listen_addr_parse(text, base_dir, &a, err, errlen) == 0) {
        if (a.proxy_protocol) {
            snprintf(err, errlen, "'%s': proxy_protocol is for listeners", text);
            return -1;
        }
        out->kind = a.family == AF_UNIX ? PX_UNIX : PX_INET;
        out->ss = a.ss;
        out->sslen = a.len;
        return 0;
    }
    /* Not a literal address: a DNS name and a port. */
    const char *colon = strrchr(text, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == text || !colon[1] || *end || port < 1 || port > 65535) {
        snprintf(err, errlen, "bad server '%s': use HOST:PORT, [IPv6]:PORT or unix:PATH", text);
        return -1;
    }
    for (const char *p = text; p < colon; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_') {
            snprintf(err, errlen, "bad server '%s': not an address or a host name", text);
            return -1;
        }
    out->kind = PX_NAME;
    out->host = strndup(text, (size_t)(colon - text));
    out->port = (uint16_t)port;
    if (!out->host) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- the section ---- */

static int parse_server(struct cfg_ctx *ctx, const config_setting_t *e, const char *up,
                        struct px_server *srv)
{
    const char *text = NULL;
    long long weight = 1;
    if (config_setting_type(e) == CONFIG_TYPE_STRING) {
        text = config_setting_get_string(e);
    } else if (config_setting_is_group(e)) {
        static const char *const keys[] = {"address", "weight", NULL};
        if (cfg_check_keys(ctx, e, "a server", keys, NULL) < 0 ||
            cfg_string(ctx, e, "address", &text) < 0 ||
            cfg_int(ctx, e, "weight", 1, 1000, &weight) < 0)
            return -1;
        if (!text)
            return cfg_error(ctx, e, "a server group needs 'address'");
    } else {
        return cfg_error(ctx, e, "a server is \"HOST:PORT\" or { address = \"...\"; weight = N; }");
    }
    char err[256];
    if (px_server_parse(text, ctx->dir, srv, err, sizeof err) < 0)
        return cfg_error(ctx, e, "%s", err);
    srv->weight = (unsigned)weight;
    if (!(srv->text = strdup(text)) || !(srv->rec = px_rec_for(up, text)))
        return cfg_error(ctx, e, "out of memory (or more than %d upstream servers)", PX_RECS_MAX);
    return 0;
}

static int parse_check(struct cfg_ctx *ctx, const config_setting_t *g, struct px_upstream *u)
{
    static const char *const keys[] = {"interval", "timeout", "path", "status", NULL};
    if (!config_setting_is_group(g))
        return cfg_error(ctx, g, "'health_check' must be a group { interval = ...; path = ...; }");
    if (cfg_check_keys(ctx, g, "health_check", keys, NULL) < 0)
        return -1;
    const char *path = "/";
    long long status = 200;
    u->check_ms = 5000;
    u->check_timeout_ms = 2000;
    if (cfg_duration_ms(ctx, g, "interval", 3600, &u->check_ms) < 0 ||
        cfg_duration_ms(ctx, g, "timeout", 600, &u->check_timeout_ms) < 0 ||
        cfg_string(ctx, g, "path", &path) < 0 || cfg_int(ctx, g, "status", 100, 599, &status) < 0)
        return -1;
    if (u->check_ms < 100)
        return cfg_error(ctx, g, "health_check interval must be at least 0.1 s");
    if (path[0] != '/' || strpbrk(path, " \r\n"))
        return cfg_error(ctx, g, "health_check path must start with '/' and hold no spaces");
    u->check_status = (int)status;
    if (!(u->check_path = strdup(path)))
        return cfg_error(ctx, g, "out of memory");
    return 0;
}

static int parse_upstream(struct cfg_ctx *ctx, const config_setting_t *b, struct px_upstream *u)
{
    static const char *const keys[] = {"name",
                                       "servers",
                                       "balance",
                                       "keepalive",
                                       "keepalive_timeout",
                                       "keepalive_requests",
                                       "connect_timeout",
                                       "send_timeout",
                                       "read_timeout",
                                       "max_fails",
                                       "fail_timeout",
                                       "tries",
                                       "health_check",
                                       "resolver",
                                       NULL};
    if (!config_setting_is_group(b))
        return cfg_error(ctx, b, "an upstream must be a group { name = ...; servers = [ ... ]; }");
    if (cfg_check_keys(ctx, b, "an upstream", keys, NULL) < 0)
        return -1;
    const char *name = NULL, *balance = "round-robin", *resolver = NULL;
    long long keepalive = 32, kreq = 1000, max_fails = 3, tries = 0;
    u->keepalive_ms = 60000;
    u->connect_ms = 5000;
    u->send_ms = 60000;
    u->read_ms = 60000;
    u->fail_ms = 10000;
    if (cfg_string(ctx, b, "name", &name) < 0 || cfg_string(ctx, b, "balance", &balance) < 0 ||
        cfg_string(ctx, b, "resolver", &resolver) < 0 ||
        cfg_int(ctx, b, "keepalive", 0, 100000, &keepalive) < 0 ||
        cfg_int(ctx, b, "keepalive_requests", 1, 1000000000, &kreq) < 0 ||
        cfg_int(ctx, b, "max_fails", 0, 1000, &max_fails) < 0 ||
        cfg_int(ctx, b, "tries", 1, 100, &tries) < 0 ||
        cfg_duration_ms(ctx, b, "keepalive_timeout", 3600, &u->keepalive_ms) < 0 ||
        cfg_duration_ms(ctx, b, "connect_timeout", 600, &u->connect_ms) < 0 ||
        cfg_duration_ms(ctx, b, "send_timeout", 3600, &u->send_ms) < 0 ||
        cfg_duration_ms(ctx, b, "read_timeout", 3600, &u->read_ms) < 0 ||
        cfg_duration_ms(ctx, b, "fail_timeout", 3600, &u->fail_ms) < 0)
        return -1;
    if (!name || !*name)
        return cfg_error(ctx, b, "every upstream needs a non-empty 'name'");
    if (!(u->name = strdup(name)))
        return cfg_error(ctx, b, "out of memory");
    if (strcmp(balance, "round-robin") == 0)
        u->balance = PX_ROUND_ROBIN;
    else if (strcmp(balance, "least-connections") == 0)
        u->balance = PX_LEAST_CONN;
    else
        return cfg_error(ctx, config_setting_get_member(b, "balance"),
                         "balance is \"round-robin\" or \"least-connections\"");
    if (!u->connect_ms || !u->send_ms || !u->read_ms)
        return cfg_error(ctx, b, "upstream timeouts must be more than 0");
    if (resolver) {
        struct sockaddr_storage ss;
        int len = sizeof ss;
        if (evutil_parse_sockaddr_port(resolver, (struct sockaddr *)&ss, &len) < 0)
            return cfg_error(ctx, config_setting_get_member(b, "resolver"),
                             "resolver must be IP or IP:PORT, not '%s'", resolver);
        if (!(u->resolver = strdup(resolver)))
            return cfg_error(ctx, b, "out of memory");
    }
    u->keepalive = (unsigned)keepalive;
    u->keepalive_requests = (unsigned)kreq;
    u->max_fails = (unsigned)max_fails;
    const config_setting_t *hc = config_setting_get_member(b, "health_check");
    if (hc && parse_check(ctx, hc, u) < 0)
        return -1;
    const config_setting_t *l = config_setting_get_member(b, "servers");
    if (!l || !(config_setting_is_array(l) || config_setting_is_list(l)) ||
        config_setting_length(l) == 0)
        return cfg_error(ctx, l ? l : b, "upstream '%s' needs 'servers', a non-empty list", name);
    int n = config_setting_length(l);
    if (!(u->servers = calloc((size_t)n, sizeof *u->servers)))
        return cfg_error(ctx, l, "out of memory");
    for (int i = 0; i < n; i++) {
        u->nservers++;
        const config_setting_t *e = config_setting_get_elem(l, (unsigned)i);
        if (parse_server(ctx, e, u->name, &u->servers[i]) < 0)
            return -1;
        for (int j = 0; j < i; j++)
            /* cfg_error() is always -1: a server parsed with 0 has its text */
            /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
            if (strcmp(u->servers[j].text, u->servers[i].text) == 0)
                return cfg_error(ctx, e, "server '%s' is listed twice", u->servers[i].text);
    }
    u->tries = tries ? (unsigned)tries : (unsigned)n;
    return 0;
}

const struct px_upstream *px_find(const struct px_section *s, const char *name)
{
    for (size_t i = 0; s && i < s->nups; i++)
        /* cfg_error() is always -1, and every 0 return has set the name (the analyzer sees one
         * file) */
        /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
        if (strcmp(s->ups[i].name, name) == 0)
            return &s->ups[i];
    return NULL;
}

/* Every proxy handler names an upstream that exists. */
static int link_handlers(struct cfg_ctx *ctx, const config_setting_t *at, const struct config *c,
                         const struct px_section *s)
{
    for (size_t i = 0; i < c->nservices; i++) {
        if (c->services[i].module != &http_module)
            continue;
        struct http_server *srv = c->services[i].pcfg;
        for (size_t v = 0; v < srv->nvhosts; v++)
            for (size_t k = 0; k < srv->vhosts[v].nhandlers; k++) {
                struct http_handler *h = &srv->vhosts[v].handlers[k];
                if (h->type != HT_PROXY)
                    continue;
                struct px_handler *ph = h->conf;
                if (!(ph->up = px_find(s, ph->upstream_name))) {
                    if (at)
                        return cfg_error(ctx, at, "handler at line %d: no upstream named '%s'",
                                         ph->line, ph->upstream_name);
                    snprintf(ctx->err, ctx->errlen,
                             "%s:%d: no upstream named '%s' (the file has no 'upstreams')",
                             ctx->file, ph->line, ph->upstream_name);
                    return -1;
                }
            }
    }
    return 0;
}

int px_parse_section(struct cfg_ctx *ctx, const config_setting_t *list, const struct config *c,
                     void **section)
{
    struct px_section *s = calloc(1, sizeof *s);
    if (!s)
        return cfg_error(ctx, list, "out of memory");
    *section = s;
    if (list) {
        if (!config_setting_is_list(list))
            return cfg_error(ctx, list, "'upstreams' must be a list: ( { name = ...; }, ... )");
        int n = config_setting_length(list);
        if (n && !(s->ups = calloc((size_t)n, sizeof *s->ups)))
            return cfg_error(ctx, list, "out of memory");
        for (int i = 0; i < n; i++) {
            const config_setting_t *b = config_setting_get_elem(list, (unsigned)i);
            s->nups++;
            if (parse_upstream(ctx, b, &s->ups[i]) < 0)
                return -1;
            for (int j = 0; j < i; j++)
                /* cfg_error() is always -1, and every 0 return has set the name (the analyzer sees
                 * one file) */
                /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
                if (strcmp(s->ups[j].name, s->ups[i].name) == 0)
                    return cfg_error(ctx, b, "duplicate upstream name '%s'", s->ups[i].name);
        }
    }
    return link_handlers(ctx, list, c, s);
}

void px_free_section(void *section)
{
    struct px_section *s = section;
    if (!s)
        return;
    for (size_t i = 0; i < s->nups; i++) {
        struct px_upstream *u = &s->ups[i];
        for (size_t k = 0; k < u->nservers; k++) {
            free(u->servers[k].text);
            free(u->servers[k].host);
        }
        free(u->servers);
        free(u->name);
        free(u->check_path);
        free(u->resolver);
    }
    free(s->ups);
    free(s);
}
