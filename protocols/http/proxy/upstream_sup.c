/*
 * The supervisor's side of the proxy: each server's health as every worker
 * should see it, the active checks, the console's `upstreams` and
 * `upstream disable|enable`, and the figures.
 *
 * Workers report a server they found failing (PXM_DOWN); the supervisor
 * records it and tells every worker (PXM_STATE), as it does for what its
 * own checks find and for the operator's commands. A worker that starts
 * asks for the current state (PXM_SYNC). The state is also published in
 * the server's record (single writer: this thread) for the figures.
 */
#include "protocols/http/proxy/upstream.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "core/module.h"
#include "core/supervisor.h"
#include "core/worker.h"
#include "protocols/http/http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TICK_MS 100

struct probe;

struct px_sstate {
    uint8_t disabled, down;
    uint64_t down_until; /* monotonic ms; 0 with down: until a check succeeds */
    uint64_t next_check;
    unsigned check_fails;
    struct probe *probe;
    char last_check[80];
};

struct px_sup {
    struct supervisor *s;
    struct px_sstate *st;
    unsigned nst;
    struct event *tick;
    struct px_dns dns; /* for the checks of servers named by DNS */
};

struct probe {
    struct px_sup *ps;
    unsigned id;
    int expect;
    struct bufferevent *bev;
};

/* Published for the figures. */
static _Atomic uint8_t pub_state[4096];
static _Atomic uint64_t pub_until[4096]; /* CLOCK_REALTIME ms, 0: until a check */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct px_sstate *sstate(struct px_sup *ps, unsigned id)
{
    if (id >= 4096)
        return NULL;
    if (id >= ps->nst) {
        unsigned have = px_rec_count(), n = have > id ? have : id + 1;
        struct px_sstate *t = realloc(ps->st, n * sizeof *t);
        if (!t)
            return NULL;
        memset(t + ps->nst, 0, (n - ps->nst) * sizeof *t);
        ps->st = t;
        ps->nst = n;
    }
    return &ps->st[id];
}

static void publish(unsigned id, const struct px_sstate *x)
{
    uint8_t st = x->disabled ? PXS_DISABLED : x->down ? PXS_DOWN : PXS_UP;
    atomic_store_explicit(&pub_state[id], st, memory_order_relaxed);
    uint64_t until = x->down && x->down_until ? wall_ms() + (x->down_until - now_ms()) : 0;
    atomic_store_explicit(&pub_until[id], until, memory_order_relaxed);
}

static void tell(int worker, unsigned id, unsigned state, uint64_t ms)
{
    struct msg m = {.module = (uint16_t)module_id(&http_module),
                    .type = PXM_STATE,
                    .a = id,
                    .b = state | ms << 8};
    bus_send(worker, &m);
}

static void tell_all(unsigned id, unsigned state, uint64_t ms)
{
    for (int w = 1; w <= bus_max_worker(); w++)
        if (bus_is_live(w))
            tell(w, id, state, ms);
}

static void set_down(struct px_sup *ps, unsigned id, uint64_t ms, const char *why)
{
    struct px_sstate *x = sstate(ps, id);
    struct px_rec *rec = px_rec_by_id(id);
    if (!x || !rec)
        return;
    if (!x->down)
        log_warn(rec->server, "upstream '%s': server down (%s)%s", rec->upstream, why,
                 ms ? "" : " until a health check succeeds");
    x->down = 1;
    x->down_until = ms ? now_ms() + ms : 0;
    publish(id, x);
    tell_all(id, PXS_DOWN, ms);
}

static void set_up(struct px_sup *ps, unsigned id, const char *why)
{
    struct px_sstate *x = sstate(ps, id);
    struct px_rec *rec = px_rec_by_id(id);
    if (!x || !rec)
        return;
    if (x->down)
        log_info(rec->server, "upstream '%s': server up (%s)", rec->upstream, why);
    x->down = 0;
    x->down_until = 0;
    x->check_fails = 0;
    publish(id, x);
    tell_all(id, PXS_UP, 0);
}

void px_sup_message(struct px_sup *ps, struct msg *m)
{
    unsigned type = m->type, from = m->from;
    uint64_t a = m->a, b = m->b;
    msg_release(m);
    if (type == PXM_DOWN) {
        set_down(ps, (unsigned)a, b, "failures seen by a worker");
    } else if (type == PXM_SYNC) {
        for (unsigned id = 0; id < ps->nst; id++) {
            const struct px_sstate *x = &ps->st[id];
            if (x->disabled)
                tell((int)from, id, PXS_DISABLED, 0);
            if (x->down) {
                uint64_t now = now_ms();
                if (!x->down_until)
                    tell((int)from, id, PXS_DOWN, 0);
                else if (x->down_until > now)
                    tell((int)from, id, PXS_DOWN, x->down_until - now);
            }
        }
    }
}

/* ---- active checks ---- */

static const struct px_upstream *upstream_of(const struct config *cfg, const struct px_rec *rec,
                                             const struct px_server **srv)
{
    const struct px_upstream *u = px_find(config_section(cfg, &http_module), rec->upstream);
    for (size_t i = 0; u && i < u->nservers; i++)
        if (u->servers[i].rec == rec) {
            *srv = &u->servers[i];
            return u;
        }
    return NULL;
}

static void probe_done(struct probe *p, int ok, const char *what)
{
    struct px_sup *ps = p->ps;
    unsigned id = p->id;
    struct px_sstate *x = sstate(ps, id);
    struct px_rec *rec = px_rec_by_id(id);
    bufferevent_free(p->bev);
    free(p);
    if (!x || !rec)
        return;
    x->probe = NULL;
    snprintf(x->last_check, sizeof x->last_check, "%s", what);
    const struct px_server *srv = NULL;
    const struct px_upstream *u = upstream_of(sup_config(ps->s), rec, &srv);
    if (!u)
        return;
    if (ok) {
        if (x->down)
            set_up(ps, id, "health check passed");
        /* set_up's sstate(id) does not grow the table again: x still stands */
        x->check_fails = 0; /* NOLINT(clang-analyzer-unix.Malloc) */
        return;
    }
    if (!x->down && ++x->check_fails >= (u->max_fails ? u->max_fails : 1)) {
        char why[120];
        snprintf(why, sizeof why, "health check: %s", what);
        set_down(ps, id, 0, why);
    }
}

static void probe_read(struct bufferevent *bev, void *arg)
{
    struct probe *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    if (!line) {
        if (evbuffer_get_length(in) > 4096)
            probe_done(p, 0, "no status line");
        return;
    }
    int status = 0;
    if (sscanf(line, "HTTP/1.%*d %d", &status) != 1) {
        probe_done(p, 0, "not HTTP");
    } else {
        char what[80];
        snprintf(what, sizeof what, "status %d", status);
        probe_done(p, status == p->expect, what);
    }
    free(line);
}

static void probe_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct probe *p = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    probe_done(p, 0,
               what & BEV_EVENT_TIMEOUT ? "timed out"
               : what & BEV_EVENT_EOF   ? "closed without an answer"
                                        : "cannot connect");
}

static void probe_start(struct px_sup *ps, const struct px_upstream *u, const struct px_server *s,
                        struct px_sstate *x)
{
    struct probe *p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->ps = ps;
    p->id = s->rec->id;
    p->expect = u->check_status;
    p->bev = bufferevent_socket_new(sup_base(ps->s), -1, BEV_OPT_CLOSE_ON_FREE);
    if (!p->bev) {
        free(p);
        return;
    }
    x->probe = p;
    bufferevent_setcb(p->bev, probe_read, NULL, probe_event, p);
    struct timeval tv = {u->check_timeout_ms / 1000, (u->check_timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(p->bev, &tv, &tv);
    bufferevent_enable(p->bev, EV_READ);
    const char *host = s->kind == PX_NAME ? s->host : "localhost";
    evbuffer_add_printf(bufferevent_get_output(p->bev),
                        "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                        "User-Agent: medusa-health-check\r\n\r\n",
                        u->check_path, host);
    int rc;
    if (s->kind == PX_NAME) {
        struct evdns_base *d = px_dns_get(&ps->dns, sup_base(ps->s), u->resolver);
        rc = d ? bufferevent_socket_connect_hostname(p->bev, d, AF_UNSPEC, s->host, s->port) : -1;
    } else {
        rc = bufferevent_socket_connect(p->bev, (const struct sockaddr *)&s->ss, (int)s->sslen);
    }
    if (rc < 0 && x->probe == p)
        probe_done(p, 0, "cannot connect");
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct px_sup *ps = arg;
    const struct px_section *sec = config_section(sup_config(ps->s), &http_module);
    uint64_t now = now_ms();
    for (unsigned id = 0; id < ps->nst; id++) {
        struct px_sstate *x = &ps->st[id];
        if (x->down && !x->down_until) { /* until a check passes: is there still one? */
            struct px_rec *rec = px_rec_by_id(id);
            const struct px_server *srv = NULL;
            const struct px_upstream *u = rec ? upstream_of(sup_config(ps->s), rec, &srv) : NULL;
            if (!u || !u->check_ms)
                set_up(ps, id, "no health check any more");
            continue;
        }
        if (x->down && x->down_until && now >= x->down_until) {
            struct px_rec *rec = px_rec_by_id(id);
            x->down = 0;
            x->down_until = 0;
            publish(id, x);
            if (rec)
                log_info(rec->server, "upstream '%s': server back in use (fail_timeout over)",
                         rec->upstream);
        }
    }
    for (size_t i = 0; sec && i < sec->nups; i++) {
        const struct px_upstream *u = &sec->ups[i];
        if (!u->check_ms)
            continue;
        for (size_t k = 0; k < u->nservers; k++) {
            struct px_sstate *x = sstate(ps, u->servers[k].rec->id);
            if (!x || x->disabled || x->probe || now < x->next_check)
                continue;
            x->next_check = now + u->check_ms;
            probe_start(ps, u, &u->servers[k], x);
        }
    }
}

struct px_sup *px_sup_new(struct supervisor *s, const struct config *cfg)
{
    (void)cfg;
    struct px_sup *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->s = s;
    ps->tick = event_new(sup_base(s), -1, EV_PERSIST, tick_cb, ps);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!ps->tick || event_add(ps->tick, &tv) < 0) {
        if (ps->tick)
            event_free(ps->tick);
        free(ps);
        return NULL;
    }
    return ps;
}

void px_sup_config(struct px_sup *ps, const struct config *cfg)
{
    (void)ps;
    (void)cfg; /* records and their state carry over; checks follow the new section */
}

void px_sup_free(struct px_sup *ps)
{
    if (!ps)
        return;
    event_free(ps->tick);
    for (unsigned id = 0; id < ps->nst; id++)
        if (ps->st[id].probe) {
            bufferevent_free(ps->st[id].probe->bev);
            free(ps->st[id].probe);
        }
    px_dns_free(&ps->dns, 0);
    free(ps->st);
    free(ps);
}

/* ---- console ---- */

static const char *state_name(unsigned st)
{
    return st == PXS_DISABLED ? "disabled" : st == PXS_DOWN ? "down" : "up";
}

/* A server's figures: one worker's slot, or every worker's added up (those
 * that left count too); the latest error wins. Any thread. */
struct px_sum {
    uint64_t active, idle, requests, failures, last_err, last_err_ms;
};

static void sum_slot(struct px_sum *t, const struct px_slot *sl)
{
    t->active += atomic_load_explicit(&sl->active, memory_order_relaxed);
    t->idle += atomic_load_explicit(&sl->idle, memory_order_relaxed);
    t->requests += atomic_load_explicit(&sl->requests, memory_order_relaxed);
    t->failures += atomic_load_explicit(&sl->failures, memory_order_relaxed);
    uint64_t lm = atomic_load_explicit(&sl->last_err_ms, memory_order_relaxed);
    if (lm > t->last_err_ms) {
        t->last_err_ms = lm;
        t->last_err = atomic_load_explicit(&sl->last_err, memory_order_relaxed);
    }
}

static struct px_sum sum_rec(const struct px_rec *rec)
{
    struct px_sum t = {0};
    for (int w = 1; w <= bus_max_worker(); w++)
        sum_slot(&t, &rec->slots[w]);
    return t;
}

static unsigned long long ago_s(uint64_t wall)
{
    return (unsigned long long)((wall_ms() - wall + 500) / 1000);
}

/* check: the last health check's outcome (the console), or NULL. */
static void server_line(const struct px_upstream *u, const struct px_server *s, int json,
                        struct sbuf *out, int first, const char *check)
{
    const struct px_rec *rec = s->rec;
    unsigned st = atomic_load_explicit(&pub_state[rec->id], memory_order_relaxed);
    struct px_sum t = sum_rec(rec);
    struct sbuf per = {0};
    for (int w = 1; w <= bus_max_worker(); w++) {
        if (!bus_is_live(w))
            continue;
        struct px_sum one = {0};
        sum_slot(&one, &rec->slots[w]);
        if (json)
            sb_addf(&per, "%s{\"worker\":%d,\"active\":%llu,\"idle\":%llu}", per.len ? "," : "", w,
                    (unsigned long long)one.active, (unsigned long long)one.idle);
        else
            sb_addf(&per, " w%d:%llu/%llu", w, (unsigned long long)one.active,
                    (unsigned long long)one.idle);
    }
    if (json) {
        sb_addf(out, "%s{\"upstream\":\"", first ? "" : ",");
        sb_add_json(out, u->name);
        sb_adds(out, "\",\"server\":\"");
        sb_add_json(out, s->text);
        sb_addf(out,
                "\",\"weight\":%u,\"state\":\"%s\",\"active\":%llu,\"idle\":%llu,"
                "\"requests\":%llu,\"failures\":%llu,\"last_error\":\"%s\",\"last_error_ms\":%llu,"
                "\"workers\":[%s],\"check\":\"%s\"}",
                s->weight, state_name(st), (unsigned long long)t.active, (unsigned long long)t.idle,
                (unsigned long long)t.requests, (unsigned long long)t.failures,
                px_err_text((enum px_err)t.last_err), (unsigned long long)t.last_err_ms,
                per.p ? per.p : "", check ? check : "");
    } else {
        sb_addf(out, "  %-28s %-8s active %llu idle %llu requests %llu failures %llu", s->text,
                state_name(st), (unsigned long long)t.active, (unsigned long long)t.idle,
                (unsigned long long)t.requests, (unsigned long long)t.failures);
        if (t.last_err)
            sb_addf(out, " last error: %s (%llu s ago)", px_err_text((enum px_err)t.last_err),
                    ago_s(t.last_err_ms));
        if (check && *check)
            sb_addf(out, " check: %s", check);
        sb_addf(out, "\n    per worker (active/idle):%s\n", per.p ? per.p : " -");
    }
    sb_free(&per);
}

int px_cmd_upstreams(struct px_sup *ps, int argc, char **argv, struct sbuf *out)
{
    int json = argc == 2 && strcmp(argv[1], "json") == 0;
    if (argc > 2 || (argc == 2 && !json)) {
        sb_adds(out, "usage: upstreams [json]\n");
        return 400;
    }
    const struct px_section *sec = config_section(sup_config(ps->s), &http_module);
    if (json)
        sb_adds(out, "[");
    int first = 1;
    for (size_t i = 0; sec && i < sec->nups; i++) {
        const struct px_upstream *u = &sec->ups[i];
        if (!json)
            sb_addf(out, "%s (%s, %zu server%s)\n", u->name,
                    u->balance == PX_LEAST_CONN ? "least-connections" : "round-robin", u->nservers,
                    u->nservers == 1 ? "" : "s");
        for (size_t k = 0; k < u->nservers; k++, first = 0) {
            const struct px_sstate *x = sstate(ps, u->servers[k].rec->id);
            server_line(u, &u->servers[k], json, out, first, x ? x->last_check : NULL);
        }
    }
    if (json)
        sb_adds(out, "]\n");
    else if (first)
        sb_adds(out, "(no upstreams)\n");
    return 200;
}

/* "SERVER" or "UPSTREAM/SERVER": every matching record. */
int px_cmd_upstream(struct px_sup *ps, int argc, char **argv, struct sbuf *out)
{
    int enable = argc == 3 && strcmp(argv[1], "enable") == 0;
    if (argc != 3 || (!enable && strcmp(argv[1], "disable") != 0)) {
        sb_adds(out, "usage: upstream disable|enable [UPSTREAM/]SERVER\n");
        return 400;
    }
    const struct px_section *sec = config_section(sup_config(ps->s), &http_module);
    const char *want = argv[2], *slash = strchr(want, '/');
    int n = 0;
    for (size_t i = 0; sec && i < sec->nups; i++) {
        const struct px_upstream *u = &sec->ups[i];
        for (size_t k = 0; k < u->nservers; k++) {
            const struct px_server *s = &u->servers[k];
            int match = strcmp(s->text, want) == 0 ||
                        (slash && strncmp(u->name, want, (size_t)(slash - want)) == 0 &&
                         !u->name[slash - want] && strcmp(s->text, slash + 1) == 0);
            if (!match)
                continue;
            struct px_sstate *x = sstate(ps, s->rec->id);
            if (!x)
                continue;
            x->disabled = (uint8_t)!enable;
            publish(s->rec->id, x);
            tell_all(s->rec->id, enable ? PXS_ENABLED : PXS_DISABLED, 0);
            log_info(s->text, "upstream '%s': server %s by the operator", u->name,
                     enable ? "enabled" : "disabled (draining)");
            sb_addf(out, "%s/%s %s\n", u->name, s->text, enable ? "enabled" : "disabled");
            n++;
        }
    }
    if (!n) {
        sb_addf(out, "no upstream server '%s' (see 'upstreams')\n", want);
        return 400;
    }
    return 200;
}

/* ---- figures (any thread) ---- */

/* The status page's table (fmt 3). */
static void html_table(const struct px_section *sec, struct sbuf *sb)
{
    if (!sec || !sec->nups)
        return;
    sb_adds(sb, "<h2>Upstreams</h2><table><tr><th class=\"l\">upstream</th>"
                "<th class=\"l\">server</th><th class=\"l\">state</th><th>active</th>"
                "<th>idle</th><th>requests</th><th>failures</th><th class=\"l\">last error</th>"
                "</tr>\n");
    for (size_t i = 0; i < sec->nups; i++)
        for (size_t k = 0; k < sec->ups[i].nservers; k++) {
            const struct px_server *s = &sec->ups[i].servers[k];
            const struct px_rec *rec = s->rec;
            struct px_sum t = sum_rec(rec);
            const char *st =
                state_name(atomic_load_explicit(&pub_state[rec->id], memory_order_relaxed));
            sb_adds(sb, "<tr><td class=\"l\">");
            sb_add_html(sb, sec->ups[i].name, strlen(sec->ups[i].name));
            sb_adds(sb, "</td><td class=\"l\">");
            sb_add_html(sb, s->text, strlen(s->text));
            sb_addf(sb,
                    "</td><td class=\"l %s\">%s</td><td>%llu</td><td>%llu</td><td>%llu</td>"
                    "<td>%llu</td><td class=\"l\">",
                    st, st, (unsigned long long)t.active, (unsigned long long)t.idle,
                    (unsigned long long)t.requests, (unsigned long long)t.failures);
            if (t.last_err)
                sb_addf(sb, "%s, %llu s ago", px_err_text((enum px_err)t.last_err),
                        ago_s(t.last_err_ms));
            sb_adds(sb, "</td></tr>\n");
        }
    sb_adds(sb, "</table>\n");
}

void px_stats(const struct config *cfg, enum px_format fmt, struct sbuf *sb)
{
    const struct px_section *sec = config_section(cfg, &http_module);
    if (fmt == PXF_HTML) {
        html_table(sec, sb);
        return;
    }
    if (fmt == PXF_JSON) {
        sb_adds(sb, "[");
        /* cppcheck-suppress unreadVariable ; the last first = 0 is the loop's end */
        int first = 1;
        for (size_t i = 0; sec && i < sec->nups; i++)
            for (size_t k = 0; k < sec->ups[i].nservers; k++, first = 0)
                server_line(&sec->ups[i], &sec->ups[i].servers[k], 1, sb, first, NULL);
        sb_adds(sb, "]");
        return;
    }
    if (fmt == PXF_TEXT) {
        for (size_t i = 0; sec && i < sec->nups; i++) {
            sb_addf(sb, "upstream %s\n", sec->ups[i].name);
            for (size_t k = 0; k < sec->ups[i].nservers; k++)
                server_line(&sec->ups[i], &sec->ups[i].servers[k], 0, sb, 0, NULL);
        }
        return;
    }
    /* Prometheus: one family at a time, its HELP and TYPE first. */
    static const struct {
        const char *name, *help, *type;
        size_t field; /* in struct px_sum; SIZE_MAX: up or not */
    } fam[] = {
        {"medusa_upstream_up", "1 if the server takes requests (not down, not disabled).", "gauge",
         SIZE_MAX},
        {"medusa_upstream_requests_total", "Requests sent to the server.", "counter",
         offsetof(struct px_sum, requests)},
        {"medusa_upstream_failures_total", "Failed connections and requests.", "counter",
         offsetof(struct px_sum, failures)},
        {"medusa_upstream_connections_active", "Upstream connections serving a request.", "gauge",
         offsetof(struct px_sum, active)},
        {"medusa_upstream_connections_idle", "Idle upstream connections in the pools.", "gauge",
         offsetof(struct px_sum, idle)},
    };
    if (!sec || !sec->nups)
        return;
    for (size_t f = 0; f < sizeof fam / sizeof *fam; f++) {
        sb_addf(sb, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name,
                fam[f].type);
        for (size_t i = 0; i < sec->nups; i++)
            for (size_t k = 0; k < sec->ups[i].nservers; k++) {
                const struct px_server *s = &sec->ups[i].servers[k];
                uint64_t v;
                if (fam[f].field == SIZE_MAX) {
                    v = atomic_load_explicit(&pub_state[s->rec->id], memory_order_relaxed) ==
                        PXS_UP;
                } else {
                    struct px_sum t = sum_rec(s->rec);
                    memcpy(&v, (const char *)&t + fam[f].field, sizeof v);
                }
                sb_addf(sb, "%s{upstream=\"%s\",server=\"%s\"} %llu\n", fam[f].name,
                        sec->ups[i].name, s->text, (unsigned long long)v);
            }
    }
}
