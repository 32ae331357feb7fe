/*
 * The HTTP module: configuration parsing (servers, virtual hosts, handler
 * chains), the per-service counters, log reopening, the console's 'http'
 * command, and the module table. Parsing runs on the supervisor (or main,
 * for -t).
 */
#include "protocols/http/http.h"

#include "core/log.h"
#include "core/sbuf.h"
#include "core/supervisor.h"
#include "core/tls.h"
#include "protocols/http/http_conn.h"
#include "protocols/http/proxy/upstream.h"
#include "protocols/http/http_util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- counters that survive reloads ---- */

struct counters_entry {
    struct counters_entry *next;
    char *name;
    struct http_counters slots[BUS_MAX_WORKERS + 1];
};
static struct counters_entry *counters_list;
static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;

struct http_counters *http_counters_for(const char *service)
{
    pthread_mutex_lock(&counters_lock);
    struct counters_entry *e = counters_list;
    while (e && strcmp(e->name, service) != 0)
        e = e->next;
    if (!e && (e = aligned_alloc(64, sizeof *e))) {
        memset(e, 0, sizeof *e);
        if (!(e->name = strdup(service))) {
            free(e);
            e = NULL;
        } else {
            e->next = counters_list;
            counters_list = e;
        }
    }
    pthread_mutex_unlock(&counters_lock);
    return e ? e->slots : NULL;
}

struct http_counters *http_counters_slot(struct http_counters *svc, int worker)
{
    return &svc[worker];
}

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    case 507:
        return "Insufficient Storage";
    default:
        return "Unknown";
    }
}

/* ---- configuration ---- */

static const struct http_handler_ops *const handler_types[] = {
    &http_static_ops, &http_redirect_ops, &http_auth_ops,  &http_put_ops,
    &http_status_ops, &http_userdir_ops,  &http_proxy_ops,
};

static void handler_free(struct http_handler *h)
{
    if (h->ops && h->ops->free)
        h->ops->free(h);
    free(h->path);
}

static int parse_methods(struct cfg_ctx *ctx, const config_setting_t *block, uint64_t *out)
{
    const config_setting_t *m = config_setting_get_member(block, "methods");
    if (!m)
        return 0;
    if (!config_setting_is_array(m) || config_setting_length(m) == 0)
        return cfg_error(ctx, m, "'methods' must be a non-empty list of method names");
    for (int i = 0; i < config_setting_length(m); i++) {
        const char *name = config_setting_get_string_elem(m, i);
        int found = -1;
        /* llhttp_method_name() aborts on numbers it does not know, so
         * walk its own table of request methods. */
        static const struct {
            int num;
            const char *name;
        } methods[] = {
#define METHOD_ENTRY(num, name, string) {num, #string},
            HTTP_METHOD_MAP(METHOD_ENTRY)
#undef METHOD_ENTRY
        };
        for (size_t k = 0; name && k < sizeof methods / sizeof *methods; k++)
            if (strcasecmp(methods[k].name, name) == 0) {
                found = methods[k].num;
                break;
            }
        if (found < 0)
            return cfg_error(ctx, m, "unknown HTTP method '%s'", name ? name : "(not a string)");
        *out |= 1ull << found;
        if (found == HTTP_GET)
            *out |= 1ull << HTTP_HEAD; /* HEAD is GET without the body */
    }
    return 0;
}

static int parse_handler(struct cfg_ctx *ctx, const config_setting_t *block,
                         struct http_server *srv, struct http_handler *h)
{
    static const char *const common[] = {"type", "path", "methods", NULL};
    const char *type = NULL, *path = NULL;
    if (!config_setting_is_group(block))
        return cfg_error(ctx, block, "a handler must be a group { type = ...; path = ...; }");
    if (cfg_string(ctx, block, "type", &type) < 0 || cfg_string(ctx, block, "path", &path) < 0)
        return -1;
    if (!type)
        return cfg_error(ctx, block, "handler without 'type'");
    for (size_t i = 0; i < sizeof handler_types / sizeof *handler_types; i++)
        if (strcmp(handler_types[i]->type, type) == 0) {
            h->ops = handler_types[i];
            h->type = (enum http_handler_type)i;
        }
    if (!h->ops)
        return cfg_error(
            ctx, block,
            "unknown handler type '%s' (static, redirect, auth, put, status, userdir, proxy)",
            type);
    if (cfg_check_keys(ctx, block, "a handler", common, h->ops->keys) < 0)
        return -1;
    if (!path)
        path = h->type == HT_USERDIR ? "/~" : h->type == HT_STATUS ? "/status" : "/";
    if (path[0] != '/')
        return cfg_error(ctx, block, "handler path '%s' must start with '/'", path);
    h->path = strdup(path);
    if (!h->path)
        return cfg_error(ctx, block, "out of memory");
    h->path_len = strlen(path);
    h->srv = srv;
    h->index = srv->nhandlers++;
    if (parse_methods(ctx, block, &h->methods) < 0)
        return -1;
    return h->ops->parse(ctx, block, h);
}

static int parse_vhost(struct cfg_ctx *ctx, const config_setting_t *block, struct http_server *srv,
                       struct http_vhost *vh)
{
    static const char *const keys[] = {"names", "handlers", "tls", NULL};
    if (!config_setting_is_group(block))
        return cfg_error(ctx, block,
                         "a virtual host must be a group { names = ...; handlers = ...; }");
    if (cfg_check_keys(ctx, block, "a virtual host", keys, NULL) < 0)
        return -1;
    const config_setting_t *names = config_setting_get_member(block, "names");
    if (!names) {
        vh->names = calloc(1, sizeof *vh->names);
        if (!vh->names || !(vh->names[0] = strdup("*")))
            return cfg_error(ctx, block, "out of memory");
        vh->nnames = 1;
    } else {
        if (!config_setting_is_array(names) || config_setting_length(names) == 0)
            return cfg_error(ctx, names, "'names' must be a non-empty list of host names");
        vh->names = calloc((size_t)config_setting_length(names), sizeof *vh->names);
        if (!vh->names)
            return cfg_error(ctx, names, "out of memory");
        for (int i = 0; i < config_setting_length(names); i++) {
            const char *n = config_setting_get_string_elem(names, i);
            if (!n || !*n ||
                (strchr(n, '*') && strcmp(n, "*") != 0 &&
                 (n[0] != '*' || n[1] != '.' || strchr(n + 1, '*'))))
                return cfg_error(ctx, names,
                                 "bad host name '%s': use a name, \"*.domain\" or \"*\"",
                                 n ? n : "(not a string)");
            if (!(vh->names[i] = strdup(n)))
                return cfg_error(ctx, names, "out of memory");
            for (char *p = vh->names[i]; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            vh->nnames++;
        }
    }
    /* its own certificate, which SNI picks for its names */
    const config_setting_t *tb = config_setting_get_member(block, "tls");
    if (tb && !ctx->tls)
        return cfg_error(ctx, tb, "a virtual host's 'tls' needs the server's own 'tls' block");
    if (tb && cfg_tls_sni(ctx, ctx->tls, tb, (const char *const *)vh->names, vh->nnames) < 0)
        return -1;
    const config_setting_t *hs = config_setting_get_member(block, "handlers");
    if (!hs || !config_setting_is_list(hs) || config_setting_length(hs) == 0)
        return cfg_error(ctx, hs ? hs : block,
                         "a virtual host needs 'handlers', a list of handler groups");
    vh->handlers = calloc((size_t)config_setting_length(hs), sizeof *vh->handlers);
    if (!vh->handlers)
        return cfg_error(ctx, hs, "out of memory");
    for (int i = 0; i < config_setting_length(hs); i++) {
        vh->nhandlers++;
        if (parse_handler(ctx, config_setting_get_elem(hs, (unsigned)i), srv, &vh->handlers[i]) < 0)
            return -1;
    }
    return 0;
}

static void http_free_cfg(void *p)
{
    struct http_server *srv = p;
    if (!srv)
        return;
    for (size_t v = 0; v < srv->nvhosts; v++) {
        struct http_vhost *vh = &srv->vhosts[v];
        for (size_t i = 0; i < vh->nnames; i++)
            free(vh->names[i]);
        free(vh->names);
        for (size_t i = 0; i < vh->nhandlers; i++)
            handler_free(&vh->handlers[i]);
        free(vh->handlers);
    }
    free(srv->vhosts);
    if (srv->access_fd >= 0)
        close(srv->access_fd);
    free(srv->access_log);
    free(srv->server_header);
    free(srv->hsts_header);
    free(srv->name);
    mime_free(srv->mime);
    free(srv);
}

static const char *const http_keys[] = {"vhosts",
                                        "access_log",
                                        "server",
                                        "mime_types",
                                        "max_uri",
                                        "max_header_size",
                                        "max_headers",
                                        "max_body",
                                        "header_timeout",
                                        "body_timeout",
                                        "keepalive_timeout",
                                        "send_timeout",
                                        "keepalive_requests",
                                        "hsts",
                                        NULL};

static int http_parse(struct cfg_ctx *ctx, const config_setting_t *block, void **pcfg)
{
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return cfg_error(ctx, block, "out of memory");
    *pcfg = srv;
    srv->access_fd = -1;
    const char *name = NULL, *server = "medusa", *access_path = NULL, *mime = NULL, *hsts = NULL;
    long long max_uri = 8192, max_header_size = 16384, max_headers = 100, max_body = 1 << 20,
              keepalive_requests = 1000;
    srv->header_timeout_ms = 10000;
    srv->body_timeout_ms = 30000;
    srv->keepalive_timeout_ms = 60000;
    srv->send_timeout_ms = 60000;
    if (cfg_string(ctx, block, "name", &name) < 0 ||
        cfg_string(ctx, block, "server", &server) < 0 ||
        cfg_string(ctx, block, "access_log", &access_path) < 0 ||
        cfg_string(ctx, block, "mime_types", &mime) < 0 ||
        cfg_string(ctx, block, "hsts", &hsts) < 0 ||
        cfg_int(ctx, block, "max_uri", 64, 1 << 20, &max_uri) < 0 ||
        cfg_int(ctx, block, "max_header_size", 256, 1 << 20, &max_header_size) < 0 ||
        cfg_int(ctx, block, "max_headers", 1, 10000, &max_headers) < 0 ||
        cfg_int(ctx, block, "max_body", 0, 1LL << 40, &max_body) < 0 ||
        cfg_int(ctx, block, "keepalive_requests", 1, 1 << 30, &keepalive_requests) < 0 ||
        cfg_duration_ms(ctx, block, "header_timeout", 3600, &srv->header_timeout_ms) < 0 ||
        cfg_duration_ms(ctx, block, "body_timeout", 3600, &srv->body_timeout_ms) < 0 ||
        cfg_duration_ms(ctx, block, "keepalive_timeout", 3600, &srv->keepalive_timeout_ms) < 0 ||
        cfg_duration_ms(ctx, block, "send_timeout", 3600, &srv->send_timeout_ms) < 0)
        return -1;
    if (!srv->header_timeout_ms || !srv->body_timeout_ms || !srv->keepalive_timeout_ms ||
        !srv->send_timeout_ms)
        return cfg_error(ctx, block, "HTTP timeouts must be greater than zero");
    srv->max_uri = (unsigned)max_uri;
    srv->max_header_size = (unsigned)max_header_size;
    srv->max_headers = (unsigned)max_headers;
    srv->max_body = max_body;
    srv->keepalive_requests = (unsigned)keepalive_requests;
    if (strpbrk(server, "\r\n"))
        return cfg_error(ctx, block, "'server' must not contain line breaks");
    size_t sl = strlen(server);
    if (!(srv->name = strdup(name ? name : "http")) || !(srv->server_header = malloc(sl + 11)))
        return cfg_error(ctx, block, "out of memory");
    if (sl)
        snprintf(srv->server_header, sl + 11, "Server: %s\r\n", server);
    else
        srv->server_header[0] = '\0';
    if (hsts) {
        const config_setting_t *at = config_setting_get_member(block, "hsts");
        if (strncasecmp(hsts, "max-age=", 8) != 0 || strpbrk(hsts, "\r\n"))
            return cfg_error(
                ctx, at, "'hsts' is the header's value: \"max-age=SECONDS[; includeSubDomains]\"");
        if (!ctx->tls)
            return cfg_error(ctx, at, "'hsts' is sent over TLS only: the service needs 'tls'");
        if (asprintf(&srv->hsts_header, "Strict-Transport-Security: %s\r\n", hsts) < 0)
            return cfg_error(ctx, block, "out of memory");
    }
    if (!(srv->stats = http_counters_for(srv->name)))
        return cfg_error(ctx, block, "out of memory");

    /* MIME types: the configured file, else mime.types beside the
     * configuration, else the system's. */
    char *mpath = mime ? cfg_path(ctx, mime) : cfg_path(ctx, "mime.types");
    if (!mpath)
        return cfg_error(ctx, block, "out of memory");
    if (!mime && access(mpath, R_OK) != 0) {
        free(mpath);
        mpath = strdup("/etc/mime.types");
        if (mpath && access(mpath, R_OK) != 0) {
            free(mpath);
            mpath = NULL; /* no table: everything is application/octet-stream */
        }
    }
    if (mpath) {
        char err[CONFIG_ERR_MAX];
        srv->mime = mime_load(mpath, err, sizeof err);
        free(mpath);
        if (!srv->mime)
            return cfg_error(ctx, config_setting_get_member(block, "mime_types") ?: block, "%s",
                             err);
    }
    if (access_path) {
        if (!(srv->access_log = cfg_path(ctx, access_path)))
            return cfg_error(ctx, block, "out of memory");
        srv->access_fd = log_file_open(srv->access_log);
        if (srv->access_fd < 0)
            return cfg_error(ctx, config_setting_get_member(block, "access_log"),
                             "cannot open access log %s: %s", srv->access_log, strerror(errno));
    }

    const config_setting_t *vhosts = config_setting_get_member(block, "vhosts");
    if (!vhosts || !config_setting_is_list(vhosts) || config_setting_length(vhosts) == 0)
        return cfg_error(ctx, vhosts ? vhosts : block,
                         "an http server needs 'vhosts', a list of virtual host groups");
    srv->vhosts = calloc((size_t)config_setting_length(vhosts), sizeof *srv->vhosts);
    if (!srv->vhosts)
        return cfg_error(ctx, vhosts, "out of memory");
    for (int i = 0; i < config_setting_length(vhosts); i++) {
        srv->nvhosts++;
        const config_setting_t *vb = config_setting_get_elem(vhosts, (unsigned)i);
        if (parse_vhost(ctx, vb, srv, &srv->vhosts[i]) < 0)
            return -1;
        struct http_vhost *vh = &srv->vhosts[i];
        for (size_t n = 0; n < vh->nnames; n++)
            if (strcmp(vh->names[n], "*") == 0) {
                if (srv->default_vhost)
                    return cfg_error(ctx, vb, "more than one virtual host is named \"*\"");
                srv->default_vhost = vh;
            }
    }
    if (!srv->default_vhost)
        srv->default_vhost = &srv->vhosts[0]; /* as nginx: the first is the default */
    return 0;
}

static int http_reopen(void *pcfg)
{
    struct http_server *srv = pcfg;
    if (srv->access_fd < 0)
        return 0;
    if (log_file_reopen(srv->access_log, srv->access_fd) < 0) {
        log_error(srv->name, "reopening access log %s: %s", srv->access_log, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- the console's "http servers" ---- */

static void list_server(const struct service *svc, int json, struct sbuf *out)
{
    const struct http_server *srv = svc->pcfg;
    if (json) {
        sb_adds(out, "{\"name\":\"");
        sb_add_json(out, srv->name);
        sb_adds(out, "\",\"listen\":[");
        for (size_t i = 0; i < svc->nlisten; i++) {
            sb_addf(out, "%s\"", i ? "," : "");
            sb_add_json(out, svc->listen[i].text);
            sb_adds(out, "\"");
        }
        sb_adds(out, "],\"vhosts\":[");
    } else {
        sb_addf(out, "server %s:", srv->name);
        for (size_t i = 0; i < svc->nlisten; i++)
            sb_addf(out, " %s", svc->listen[i].text);
        sb_adds(out, "\n");
    }
    for (size_t v = 0; v < srv->nvhosts; v++) {
        const struct http_vhost *vh = &srv->vhosts[v];
        sb_adds(out, json ? (v ? ",{\"names\":[" : "{\"names\":[") : "  vhost");
        for (size_t n = 0; n < vh->nnames; n++) {
            if (json) {
                sb_addf(out, "%s\"", n ? "," : "");
                sb_add_json(out, vh->names[n]);
                sb_adds(out, "\"");
            } else {
                sb_addf(out, " %s", vh->names[n]);
            }
        }
        sb_adds(out,
                json ? "],\"handlers\":[" : (vh == srv->default_vhost ? " (default)\n" : "\n"));
        for (size_t i = 0; i < vh->nhandlers; i++) {
            const struct http_handler *h = &vh->handlers[i];
            if (json) {
                sb_addf(out, "%s{\"type\":\"%s\",\"path\":\"", i ? "," : "", h->ops->type);
                sb_add_json(out, h->path);
                sb_adds(out, "\"}");
            } else {
                sb_addf(out, "    %-9s %s\n", h->ops->type, h->path);
            }
        }
        if (json)
            sb_adds(out, "]}");
    }
    if (json)
        sb_adds(out, "]}");
}

/* The supervisor side: the console's commands need the running
 * configuration; the proxy keeps upstream health there. */
struct http_sup {
    struct supervisor *s;
    struct px_sup *px;
};

static int http_sup_init(struct supervisor *s, const struct config *cfg, void **state, char *err,
                         size_t errlen)
{
    struct http_sup *hs = calloc(1, sizeof *hs);
    if (!hs || !(hs->px = px_sup_new(s, cfg))) {
        free(hs);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    hs->s = s;
    *state = hs;
    return 0;
}

static void http_sup_config(void *state, const struct config *cfg)
{
    px_sup_config(((struct http_sup *)state)->px, cfg);
}

static void http_sup_dispose(void *state)
{
    struct http_sup *hs = state;
    px_sup_free(hs->px);
    free(hs);
}

static void http_sup_message(void *state, struct msg *m)
{
    px_sup_message(((struct http_sup *)state)->px, m);
}

static int cmd_upstreams(void *state, int argc, char **argv, struct sbuf *out)
{
    return px_cmd_upstreams(((struct http_sup *)state)->px, argc, argv, out);
}

static int cmd_upstream(void *state, int argc, char **argv, struct sbuf *out)
{
    return px_cmd_upstream(((struct http_sup *)state)->px, argc, argv, out);
}

static int cmd_servers(void *state, int argc, char **argv, struct sbuf *out)
{
    int json = argc == 3 && strcmp(argv[2], "json") == 0;
    if (argc > 3 || (argc == 3 && !json)) {
        sb_adds(out, "usage: http servers [json]\n");
        return 400;
    }
    const struct config *cfg = sup_config(((struct http_sup *)state)->s);
    int first = 1;
    if (json)
        sb_adds(out, "[");
    for (size_t i = 0; cfg && i < cfg->nservices; i++) {
        if (cfg->services[i].module != &http_module)
            continue;
        if (json && !first)
            sb_adds(out, ",");
        list_server(&cfg->services[i], json, out);
        first = 0;
    }
    sb_adds(out, json ? "]\n" : (first ? "(no HTTP server)\n" : ""));
    return 200;
}

static const struct module_command http_commands[] = {
    {"http servers", MODULE_OPERATOR, "http servers [json]",
     "HTTP servers: listeners, virtual hosts, handler chains", cmd_servers},
    {"upstreams", MODULE_OPERATOR, "upstreams [json]",
     "proxy upstreams: per server state, pooled connections per worker, requests, failures",
     cmd_upstreams},
    {"upstream", MODULE_ADMIN, "upstream disable|enable [UPSTREAM/]SERVER",
     "drain a server (no new requests; in-flight ones finish) or take it back", cmd_upstream},
    {NULL, 0, NULL, NULL, NULL},
};

const struct module http_module = {
    .name = "http",
    /* Nagle is turned off per connection once it is kept alive. */
    .flags = MODULE_DEFER_ACCEPT | MODULE_RAW_IO,
    .alpn = "\x08http/1.1", /* (room for h2) */
    /* nginx's limit_conn answers 503 too */
    .busy_reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                  "Content-Length: 40\r\nRetry-After: 10\r\nConnection: close\r\n\r\n"
                  "Too many connections from your address.\n",
    .keys = http_keys,
    .parse = http_parse,
    .free_cfg = http_free_cfg,
    .worker_init = http_worker_init,
    .worker_dispose = http_worker_dispose,
    .worker_config = http_worker_config,
    .accept = http_accept,
    .adopt = http_adopt,
    .closed = http_closed,
    .drain = http_drain,
    .describe = http_describe,
    .message = http_message,
    .section = "upstreams",
    .parse_section = px_parse_section,
    .free_section = px_free_section,
    .sup_init = http_sup_init,
    .sup_config = http_sup_config,
    .sup_dispose = http_sup_dispose,
    .sup_message = http_sup_message,
    .reopen = http_reopen,
    .stats = http_stats,
    .commands = http_commands,
};
