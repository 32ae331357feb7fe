/*
 * status handler: Medusa's status page, as HTML at the handler's path, JSON
 * at path.json and Prometheus text exposition at metrics_path (default
 * /metrics). Figures: uptime, every live worker's connection and byte
 * counters, and for every HTTP server of the running configuration its
 * connections, requests by status class, bytes and handler hits, in total
 * and per worker; the JSON and the HTML page also carry every other
 * module's figures (core/module.h's stats).
 *
 * Counters are single-writer relaxed atomics (core/stats.h), so any worker
 * reads every other worker's without locks or messages; a figure may be a
 * few requests behind its neighbour, never torn.
 */
#include "core/config.h"
#include "core/conn.h"
#include "core/module.h"
#include "core/stats.h"
#include "core/tls.h"
#include "protocols/http/http.h"
#include "protocols/http/http_util.h"
#include "protocols/http/proxy/upstream.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct status_conf {
    char *json_path;
    char *metrics_path;
};

static const char *const type_names[HT_COUNT] = {"static", "redirect", "auth", "put",
                                                 "status", "userdir",  "proxy"};
static const char *const class_names[6] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

struct srv_sum {
    uint64_t accepted, active, requests, bytes_in, bytes_out, status[6], hits[HT_COUNT];
};

static void sum_slot(struct srv_sum *s, struct http_counters *c)
{
    s->accepted += stat_get(&c->accepted);
    s->active += stat_get(&c->active);
    s->requests += stat_get(&c->requests);
    s->bytes_in += stat_get(&c->bytes_in);
    s->bytes_out += stat_get(&c->bytes_out);
    for (int i = 0; i < 6; i++)
        s->status[i] += stat_get(&c->status[i]);
    for (int i = 0; i < HT_COUNT; i++)
        s->hits[i] += stat_get(&c->hits[i]);
}

static int status_match(const struct http_handler *h, const char *path)
{
    const struct status_conf *sc = h->conf;
    return strcmp(path, h->path) == 0 || strcmp(path, sc->json_path) == 0 ||
           strcmp(path, sc->metrics_path) == 0;
}

static void json_server(struct sbuf *sb, const char *name, const struct srv_sum *s, int worker)
{
    sb_adds(sb, "{");
    if (name) {
        sb_adds(sb, "\"name\":\"");
        sb_add_json(sb, name);
        sb_adds(sb, "\",");
    } else {
        sb_addf(sb, "\"worker\":%d,", worker);
    }
    sb_addf(sb,
            "\"connections_accepted\":%llu,\"connections_active\":%llu,\"requests\":%llu,"
            "\"bytes_in\":%llu,\"bytes_out\":%llu,\"responses\":{",
            (unsigned long long)s->accepted, (unsigned long long)s->active,
            (unsigned long long)s->requests, (unsigned long long)s->bytes_in,
            (unsigned long long)s->bytes_out);
    for (int i = 0; i < 6; i++)
        sb_addf(sb, "%s\"%s\":%llu", i ? "," : "", class_names[i],
                (unsigned long long)s->status[i]);
    sb_adds(sb, "},\"handler_hits\":{");
    for (int i = 0; i < HT_COUNT; i++)
        sb_addf(sb, "%s\"%s\":%llu", i ? "," : "", type_names[i], (unsigned long long)s->hits[i]);
    sb_adds(sb, "}}");
}

/* 45 s, 12 min 3 s, 5 h 2 min, 3 d 4 h. */
static void human_duration(struct sbuf *sb, long long s)
{
    if (s < 60)
        sb_addf(sb, "%lld s", s);
    else if (s < 3600)
        sb_addf(sb, "%lld min %lld s", s / 60, s % 60);
    else if (s < 86400)
        sb_addf(sb, "%lld h %lld min", s / 3600, s % 3600 / 60);
    else
        sb_addf(sb, "%lld d %lld h", s / 86400, s % 86400 / 3600);
}

static void td_bytes(struct sbuf *sb, uint64_t n)
{
    sb_addf(sb, "<td title=\"%llu bytes\">", (unsigned long long)n);
    sb_add_bytes(sb, n);
    sb_adds(sb, "</td>");
}

static void html_row(struct sbuf *sb, const char *label, const struct srv_sum *s)
{
    sb_adds(sb, label[0] == ' ' ? "<tr class=\"sub\"><td class=\"l\">" : "<tr><td class=\"l\">");
    sb_add_html(sb, label, strlen(label));
    sb_addf(sb, "</td><td>%llu</td><td>%llu</td><td>%llu</td>", (unsigned long long)s->active,
            (unsigned long long)s->accepted, (unsigned long long)s->requests);
    for (int i = 1; i < 6; i++)
        sb_addf(sb, "<td>%llu</td>", (unsigned long long)s->status[i]);
    td_bytes(sb, s->bytes_in);
    td_bytes(sb, s->bytes_out);
    sb_adds(sb, "<td class=\"l\">");
    for (int i = 0; i < HT_COUNT; i++)
        if (s->hits[i])
            sb_addf(sb, "%s&nbsp;%llu ", type_names[i], (unsigned long long)s->hits[i]);
    sb_adds(sb, "</td></tr>\n");
}

enum status_format { HTML, PROM, JSON, TEXT };

static void text_server(struct sbuf *sb, const char *name, const struct srv_sum *s)
{
    sb_addf(sb,
            "http %s: %llu active, %llu accepted, %llu requests (1xx %llu, 2xx %llu, 3xx %llu, "
            "4xx %llu, 5xx %llu), %llu bytes in, %llu bytes out\n",
            name, (unsigned long long)s->active, (unsigned long long)s->accepted,
            (unsigned long long)s->requests, (unsigned long long)s->status[1],
            (unsigned long long)s->status[2], (unsigned long long)s->status[3],
            (unsigned long long)s->status[4], (unsigned long long)s->status[5],
            (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out);
}

/* Every HTTP server of cfg, in total and per live worker. */
static void servers(enum status_format fmt, const struct config *cfg, struct sbuf *sb)
{
    int first = 1, maxw = bus_max_worker();
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct service *svc = &cfg->services[i];
        if (svc->module != &http_module)
            continue;
        const struct http_server *srv = svc->pcfg;
        struct srv_sum total = {0};
        for (int w = 1; w <= BUS_MAX_WORKERS; w++)
            sum_slot(&total, http_counters_slot(srv->stats, w));
        if (fmt == JSON) {
            sb_adds(sb, first ? "" : ",");
            json_server(sb, srv->name, &total, 0);
            sb->len--; /* reopen the object for the per-worker list */
            sb_adds(sb, ",\"workers\":[");
        } else if (fmt == TEXT) {
            text_server(sb, srv->name, &total);
            continue;
        } else {
            html_row(sb, srv->name, &total);
        }
        int wfirst = 1;
        for (int w = 1; w <= maxw; w++) {
            if (!bus_is_live(w))
                continue;
            struct srv_sum one = {0};
            sum_slot(&one, http_counters_slot(srv->stats, w));
            if (fmt == JSON) {
                sb_adds(sb, wfirst ? "" : ",");
                json_server(sb, NULL, &one, w);
            } else {
                char label[64];
                snprintf(label, sizeof label, "  worker %d", w);
                html_row(sb, label, &one);
            }
            wfirst = 0;
        }
        if (fmt == JSON)
            sb_adds(sb, "]}");
        first = 0;
    }
}

void http_stats(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb)
{
    if (fmt == MODULE_STATS_JSON) {
        sb_adds(sb, "{\"servers\":[");
        servers(JSON, cfg, sb);
        sb_adds(sb, "],\"upstreams\":");
        px_stats(cfg, PXF_JSON, sb);
        sb_adds(sb, "}");
    } else {
        servers(TEXT, cfg, sb);
        px_stats(cfg, PXF_TEXT, sb);
    }
}

/* ---- Prometheus text exposition ----
 * Each family once: HELP, TYPE, then all of its samples (what Prometheus's
 * own parsers expect). Per-worker series have families of their own
 * (medusa_worker_*); the per-server ones are totals, so sum() never counts
 * twice. */

static void family(struct sbuf *sb, const char *name, const char *type, const char *help)
{
    sb_addf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void label_value(struct sbuf *sb, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_addf(sb, "\\%c", *v);
        else if (*v == '\n')
            sb_adds(sb, "\\n");
        else
            sb_add(sb, v, 1);
    }
}

enum { F_ACCEPTED, F_ACTIVE, F_REQUESTS, F_BYTES_IN, F_BYTES_OUT, F_RESPONSES, F_HITS, F_N };

static void prom_http(const struct config *cfg, struct sbuf *sb)
{
    static const struct {
        const char *name, *type, *help;
    } fams[F_N] = {
        {"medusa_http_connections_accepted_total", "counter", "HTTP connections accepted."},
        {"medusa_http_connections_active", "gauge", "Open HTTP connections."},
        {"medusa_http_requests_total", "counter", "HTTP requests answered."},
        {"medusa_http_received_bytes_total", "counter", "Request bytes received."},
        {"medusa_http_sent_bytes_total", "counter", "Response bytes sent."},
        {"medusa_http_responses_total", "counter", "Responses by status class."},
        {"medusa_http_handler_hits_total", "counter", "Requests each handler type took."},
    };
    for (int f = 0; f < F_N; f++) {
        family(sb, fams[f].name, fams[f].type, fams[f].help);
        for (size_t i = 0; i < cfg->nservices; i++) {
            const struct service *svc = &cfg->services[i];
            if (svc->module != &http_module)
                continue;
            const struct http_server *srv = svc->pcfg;
            struct srv_sum t = {0};
            for (int w = 1; w <= BUS_MAX_WORKERS; w++) /* workers that left count too */
                sum_slot(&t, http_counters_slot(srv->stats, w));
            const uint64_t plain[] = {t.accepted, t.active, t.requests, t.bytes_in, t.bytes_out};
            int n = f == F_RESPONSES ? 6 : f == F_HITS ? HT_COUNT : 1;
            for (int k = 0; k < n; k++) {
                sb_addf(sb, "%s{server=\"", fams[f].name);
                label_value(sb, srv->name);
                if (f == F_RESPONSES)
                    sb_addf(sb, "\",class=\"%s\"} %llu\n", class_names[k],
                            (unsigned long long)t.status[k]);
                else if (f == F_HITS)
                    sb_addf(sb, "\",handler=\"%s\"} %llu\n", type_names[k],
                            (unsigned long long)t.hits[k]);
                else
                    sb_addf(sb, "\"} %llu\n", (unsigned long long)plain[f]);
            }
        }
    }
}

static void prom_page(const struct config *cfg, struct sbuf *sb)
{
    family(sb, "medusa_uptime_seconds", "gauge", "Seconds since the server started.");
    sb_addf(sb, "medusa_uptime_seconds %lld\n", (long long)time(NULL) - stats_started());
    struct worker_stats_snapshot ws[BUS_MAX_WORKERS + 1];
    int ids[BUS_MAX_WORKERS + 1], n = 0;
    for (int w = 1; w <= bus_max_worker(); w++)
        if (bus_is_live(w)) {
            stats_read(w, &ws[n]);
            ids[n++] = w;
        }
    family(sb, "medusa_worker_connections_active", "gauge", "Open connections per worker.");
    for (int i = 0; i < n; i++)
        sb_addf(sb, "medusa_worker_connections_active{worker=\"%d\"} %llu\n", ids[i],
                (unsigned long long)ws[i].active);
    family(sb, "medusa_worker_connections_accepted_total", "counter",
           "Connections accepted per worker.");
    for (int i = 0; i < n; i++)
        sb_addf(sb, "medusa_worker_connections_accepted_total{worker=\"%d\"} %llu\n", ids[i],
                (unsigned long long)ws[i].accepted);
    family(sb, "medusa_worker_bytes_total", "counter", "Bytes per worker and direction.");
    for (int i = 0; i < n; i++)
        sb_addf(sb,
                "medusa_worker_bytes_total{worker=\"%d\",direction=\"in\"} %llu\n"
                "medusa_worker_bytes_total{worker=\"%d\",direction=\"out\"} %llu\n",
                ids[i], (unsigned long long)ws[i].bytes_in, ids[i],
                (unsigned long long)ws[i].bytes_out);
    family(sb, "medusa_worker_loop_lag_seconds", "gauge", "Event-loop lag per worker.");
    for (int i = 0; i < n; i++)
        sb_addf(sb, "medusa_worker_loop_lag_seconds{worker=\"%d\"} %.6f\n", ids[i],
                (double)ws[i].lag_us / 1e6);
    tls_stats(MODULE_STATS_PROM, sb);
    prom_http(cfg, sb);
    px_stats(cfg, PXF_PROM, sb);
    for (unsigned i = 1; i <= module_count(); i++) {
        const struct module *m = module_at(i);
        if (m != &http_module && m->stats)
            m->stats(cfg, MODULE_STATS_PROM, sb);
    }
}

/* The page: HTML or Prometheus text. (JSON is every module's figures:
 * stats_report.) */
/* A module's flat JSON object ({"name":number or "text",...}) as a
 * one-row table; byte counts in human units. Anything else is shown as it
 * is. */
static void module_table(struct sbuf *sb, const char *js, size_t len)
{
    struct sbuf head = {0}, row = {0};
    const char *p = js, *end = js + len;
    int ok = len && *p == '{';
    for (p++; ok && p < end && *p != '}';) {
        if (*p == ',')
            p++;
        const char *k = p + 1, *q = *p == '"' ? memchr(k, '"', (size_t)(end - k)) : NULL;
        char *num_end;
        if (!q || q + 1 >= end || q[1] != ':') {
            ok = 0;
            break;
        }
        int text = q[2] == '"'; /* a string (TLS's "ktls"): shown as it is */
        const char *v = q + 3, *e = v;
        unsigned long long n = 0;
        if (text) {
            while (e < end && *e != '"')
                e += *e == '\\' ? 2 : 1;
        } else {
            n = strtoull(q + 2, &num_end, 10);
            e = num_end == q + 2 ? end : num_end;
        }
        if (e >= end) {
            ok = 0;
            break;
        }
        sb_adds(&head, "<th>");
        for (const char *c = k; c < q; c++)
            sb_add(&head, *c == '_' ? " " : c, 1);
        sb_adds(&head, "</th>");
        if (text) {
            sb_adds(&row, "<td class=\"l\">");
            sb_add_html(&row, v, (size_t)(e - v));
            sb_adds(&row, "</td>");
            p = e + 1;
        } else {
            if (q - k >= 5 && (memcmp(k, "bytes", 5) == 0 || memcmp(q - 5, "bytes", 5) == 0))
                td_bytes(&row, n);
            else
                sb_addf(&row, "<td>%llu</td>", n);
            p = e;
        }
    }
    if (ok && head.len) {
        sb_adds(sb, "<table><tr>");
        sb_add(sb, head.p, head.len);
        sb_adds(sb, "</tr><tr>");
        sb_add(sb, row.p, row.len);
        sb_adds(sb, "</tr></table>\n");
    } else {
        sb_adds(sb, "<pre>");
        sb_add_html(sb, js, len);
        sb_adds(sb, "</pre>\n");
    }
    sb_free(&head);
    sb_free(&row);
}

static void build(enum status_format fmt, const struct config *cfg, struct sbuf *sb, int refresh)
{
    if (fmt == PROM) {
        prom_page(cfg, sb);
        return;
    }
    long long uptime = (long long)time(NULL) - stats_started();
    int maxw = bus_max_worker();
    struct worker_stats_snapshot total = {0};
    int live = 0;
    for (int w = 1; w <= BUS_MAX_WORKERS; w++) {
        struct worker_stats_snapshot ws;
        stats_read(w, &ws);
        stats_sum(&total, &ws); /* workers that left count too */
        live += w <= maxw && bus_is_live(w);
    }
    sb_adds(sb, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width\">");
    if (refresh)
        sb_addf(sb, "<meta http-equiv=\"refresh\" content=\"%d\">", refresh);
    sb_adds(sb, "<title>medusa status</title><style>"
                "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}"
                "header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;"
                "align-items:baseline;gap:24px;flex-wrap:wrap}header h1{font-size:20px;margin:0}"
                "header a{color:#9ecbff}main{padding:8px 24px 24px}"
                ".cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}"
                ".card{background:#fff;border-radius:6px;padding:10px 16px;min-width:120px;"
                "box-shadow:0 1px 2px #0002}.card b{display:block;font-size:22px}"
                "h2{font-size:16px;margin:22px 0 6px}"
                "table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;"
                "border-radius:6px}th,td{padding:4px 12px;text-align:right;white-space:nowrap}"
                "th{background:#e8ebf0;font-weight:600}td.l,th.l{text-align:left}"
                "tr:nth-child(even) td{background:#fafbfc}tr.sub td{color:#667;font-size:13px}"
                ".up{color:#17803d}.down{color:#c0262d}.disabled{color:#a15c00}"
                "</style></head><body><header><h1>medusa</h1>");
    sb_addf(sb, "<span>version %s</span><span>pid %d</span><span>up ", MEDUSA_VERSION,
            (int)getpid());
    human_duration(sb, uptime);
    sb_addf(sb, "</span><span>refresh: %s | %s | %s</span></header><main>",
            refresh ? "<a href=\"?\">off</a>" : "off",
            refresh == 5 ? "5 s" : "<a href=\"?refresh=5\">5 s</a>",
            refresh == 30 ? "30 s" : "<a href=\"?refresh=30\">30 s</a>");
    sb_addf(sb,
            "<div class=\"cards\"><div class=\"card\"><b>%d</b>workers</div>"
            "<div class=\"card\"><b>%llu</b>open connection%s</div>"
            "<div class=\"card\"><b>%llu</b>accepted</div>"
            "<div class=\"card\"><b>%llu</b>requests and lines</div>"
            "<div class=\"card\"><b>",
            live, (unsigned long long)total.active, total.active == 1 ? "" : "s",
            (unsigned long long)total.accepted, (unsigned long long)total.requests);
    sb_add_bytes(sb, total.bytes_in);
    sb_adds(sb, "</b>in</div><div class=\"card\"><b>");
    sb_add_bytes(sb, total.bytes_out);
    sb_adds(sb, "</b>out</div></div>");
    sb_adds(sb, "<h2>Workers</h2><table><tr><th>worker</th><th>open</th><th>accepted</th>"
                "<th>closed</th><th>in</th><th>out</th><th>errors</th><th>moved in/out</th>"
                "<th>loop lag</th></tr>\n");
    for (int w = 1; w <= maxw; w++) {
        if (!bus_is_live(w))
            continue;
        struct worker_stats_snapshot ws;
        stats_read(w, &ws);
        sb_addf(sb, "<tr><td>%d</td><td>%llu</td><td>%llu</td><td>%llu</td>", w,
                (unsigned long long)ws.active, (unsigned long long)ws.accepted,
                (unsigned long long)ws.closed);
        td_bytes(sb, ws.bytes_in);
        td_bytes(sb, ws.bytes_out);
        sb_addf(sb, "<td>%llu</td><td>%llu / %llu</td><td>%.1f ms</td></tr>\n",
                (unsigned long long)ws.errors, (unsigned long long)ws.moved_in,
                (unsigned long long)ws.moved_out, (double)ws.lag_us / 1000);
    }
    sb_adds(sb, "</table><h2>HTTP</h2><table><tr><th class=\"l\">server</th><th>open</th>"
                "<th>accepted</th><th>requests</th><th>1xx</th><th>2xx</th><th>3xx</th>"
                "<th>4xx</th><th>5xx</th><th>in</th><th>out</th>"
                "<th class=\"l\">handler hits</th></tr>\n");
    servers(fmt, cfg, sb);
    sb_adds(sb, "</table>\n");
    px_stats(cfg, PXF_HTML, sb); /* the proxy's upstreams, when there are */
    /* TLS handshakes, every service's and the console's together */
    struct sbuf tj = {0};
    tls_stats(MODULE_STATS_JSON, &tj);
    sb_adds(sb, "<h2>tls</h2>");
    module_table(sb, tj.p ? tj.p : "", tj.len);
    sb_free(&tj);
    /* The other modules: a table of each one's figures (its JSON object). */
    for (unsigned i = 1; i <= module_count(); i++) {
        const struct module *m = module_at(i);
        if (m == &http_module || !m->stats)
            continue;
        struct sbuf js = {0};
        m->stats(cfg, MODULE_STATS_JSON, &js);
        sb_adds(sb, "<h2>");
        sb_add_html(sb, m->name, strlen(m->name));
        sb_adds(sb, "</h2>");
        module_table(sb, js.p ? js.p : "", js.len);
        sb_free(&js);
    }
    sb_adds(sb, "</main></body></html>\n");
}

/* ?refresh=N (1 to 3600 s): the page reloads itself. */
static int refresh_of(const struct http_req *r)
{
    const char *q = r->query.p;
    size_t n = r->query.len;
    if (!q || n < 9 || strncmp(q, "refresh=", 8) != 0)
        return 0;
    int v = 0;
    for (size_t i = 8; i < n && i < 13 && q[i] >= '0' && q[i] <= '9'; i++)
        v = v * 10 + (q[i] - '0');
    return v >= 1 && v <= 3600 ? v : 0;
}

static enum http_action status_on_req(struct http_handler *h, struct http_req *r)
{
    const struct status_conf *sc = h->conf;
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
        http_error(r, 405, "Allow: GET, HEAD\r\n");
        return HTTP_DONE;
    }
    enum status_format fmt = strcmp(r->path, sc->json_path) == 0      ? JSON
                             : strcmp(r->path, sc->metrics_path) == 0 ? PROM
                                                                      : HTML;
    struct sbuf sb = {0};
    if (fmt == JSON)
        stats_report(r->c->cfg, MODULE_STATS_JSON, &sb);
    else
        build(fmt, r->c->cfg, &sb, refresh_of(r));
    if (sb.failed) {
        http_error(r, 500, NULL);
    } else {
        http_resp_start(r, 200);
        http_resp_raw(r, LIT("Cache-Control: no-store\r\n"));
        http_resp_body(r,
                       fmt == JSON   ? "application/json"
                       : fmt == PROM ? "text/plain; version=0.0.4; charset=utf-8"
                                     : "text/html; charset=utf-8",
                       sb.p, sb.len);
    }
    sb_free(&sb);
    return HTTP_DONE;
}

static void status_free(struct http_handler *h)
{
    struct status_conf *sc = h->conf;
    if (!sc)
        return;
    free(sc->json_path);
    free(sc->metrics_path);
    free(sc);
}

static int status_parse(struct cfg_ctx *ctx, const config_setting_t *block, struct http_handler *h)
{
    struct status_conf *sc = calloc(1, sizeof *sc);
    if (!sc)
        return cfg_error(ctx, block, "out of memory");
    h->conf = sc;
    const char *metrics = "/metrics";
    if (cfg_string(ctx, block, "metrics_path", &metrics) < 0)
        return -1;
    if (metrics[0] != '/')
        return cfg_error(ctx, block, "'metrics_path' must start with '/'");
    size_t pl = strlen(h->path);
    if (!(sc->json_path = malloc(pl + 6)) || !(sc->metrics_path = strdup(metrics)))
        return cfg_error(ctx, block, "out of memory");
    snprintf(sc->json_path, pl + 6, "%s.json", h->path);
    return 0;
}

static const char *const status_keys[] = {"metrics_path", NULL};

const struct http_handler_ops http_status_ops = {
    .type = "status",
    .keys = status_keys,
    .parse = status_parse,
    .free = status_free,
    .match = status_match,
    .on_req = status_on_req,
};
