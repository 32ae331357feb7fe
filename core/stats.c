/* Counter slots for every possible worker, the process start time, and the
 * report that gathers every figure (the console's 'stats', /status.json). */
#include "core/stats.h"

#include "core/bus.h"
#include "core/tls.h"
#include "core/module.h"
#include "core/sbuf.h"
#include "version.h"

#include <time.h>
#include <unistd.h>
#include <string.h>

static struct worker_stats slots[BUS_MAX_WORKERS + 1];
static long long started;

__attribute__((constructor)) static void stats_init(void)
{
    started = (long long)time(NULL);
}

struct worker_stats *stats_slot(int id)
{
    return &slots[id];
}

void stats_reset(int id)
{
    _Atomic uint64_t *c[] = {&slots[id].accepted, &slots[id].active,    &slots[id].closed,
                             &slots[id].bytes_in, &slots[id].bytes_out, &slots[id].errors,
                             &slots[id].requests, &slots[id].moved_in,  &slots[id].moved_out,
                             &slots[id].lag_us,   &slots[id].refused};
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        atomic_store_explicit(c[i], 0, memory_order_relaxed);
}

long long stats_started(void)
{
    return started;
}

void stats_read(int id, struct worker_stats_snapshot *out)
{
    struct worker_stats *w = &slots[id];
    *out = (struct worker_stats_snapshot){
        .worker = id,
        .accepted = stat_get(&w->accepted),
        .active = stat_get(&w->active),
        .closed = stat_get(&w->closed),
        .bytes_in = stat_get(&w->bytes_in),
        .bytes_out = stat_get(&w->bytes_out),
        .errors = stat_get(&w->errors),
        .requests = stat_get(&w->requests),
        .moved_in = stat_get(&w->moved_in),
        .moved_out = stat_get(&w->moved_out),
        .lag_us = stat_get(&w->lag_us),
        .refused = stat_get(&w->refused),
    };
}

void stats_sum(struct worker_stats_snapshot *t, const struct worker_stats_snapshot *w)
{
    t->accepted += w->accepted;
    t->active += w->active;
    t->closed += w->closed;
    t->bytes_in += w->bytes_in;
    t->bytes_out += w->bytes_out;
    t->errors += w->errors;
    t->requests += w->requests;
    t->moved_in += w->moved_in;
    t->moved_out += w->moved_out;
    t->refused += w->refused;
}

static void report_workers(enum module_stats_format fmt, struct sbuf *sb)
{
    int first = 1;
    for (int id = 1; id <= bus_max_worker(); id++) {
        if (!bus_is_live(id))
            continue;
        struct worker_stats_snapshot w;
        stats_read(id, &w);
        unsigned long long act = w.active, acc = w.accepted, clo = w.closed, bin = w.bytes_in,
                           bout = w.bytes_out, err = w.errors, min = w.moved_in, mout = w.moved_out,
                           ref = w.refused;
        if (fmt == MODULE_STATS_JSON)
            sb_addf(sb,
                    "%s{\"id\":%d,\"connections_active\":%llu,\"connections_accepted\":%llu,"
                    "\"connections_closed\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                    "\"errors\":%llu,\"moved_in\":%llu,\"moved_out\":%llu,\"refused\":%llu}",
                    first ? "" : ",", id, act, acc, clo, bin, bout, err, min, mout, ref);
        else
            sb_addf(sb,
                    "worker %d: %llu active, %llu accepted, %llu closed, %llu moved in, %llu "
                    "moved out, %llu bytes in, %llu bytes out, %llu errors, %llu refused\n",
                    id, act, acc, clo, min, mout, bin, bout, err, ref);
        first = 0;
    }
}

void stats_report(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb)
{
    long long uptime = (long long)time(NULL) - started;
    if (fmt == MODULE_STATS_JSON) {
        sb_addf(sb, "{\"version\":\"%s\",\"pid\":%d,\"uptime_seconds\":%lld,\"workers\":[",
                MEDUSA_VERSION, (int)getpid(), uptime);
        report_workers(fmt, sb);
        sb_adds(sb, "]");
    } else {
        sb_addf(sb, "medusa %s, pid %d, up %lld s\n", MEDUSA_VERSION, (int)getpid(), uptime);
        report_workers(fmt, sb);
    }
    if (fmt == MODULE_STATS_JSON)
        sb_adds(sb, ",\"tls\":");
    tls_stats(fmt, sb);
    for (unsigned i = 1; i <= module_count(); i++) {
        const struct module *m = module_at(i);
        if (!m->stats)
            continue;
        if (fmt == MODULE_STATS_JSON) {
            sb_adds(sb, ",\"");
            sb_add_json(sb, m->name);
            sb_adds(sb, "\":");
        }
        m->stats(cfg, fmt, sb);
    }
    if (fmt == MODULE_STATS_JSON)
        sb_adds(sb, "}\n");
}

void stats_counters(struct sbuf *sb, enum module_stats_format fmt, const char *title,
                    const char *const *names, const uint64_t *values, int n)
{
    if (fmt == MODULE_STATS_PROM) {
        for (int i = 0; i < n; i++) {
            size_t l = strlen(names[i]);
            int gauge = (l >= 7 && strcmp(names[i] + l - 7, "_active") == 0) ||
                        (l >= 6 && strcmp(names[i] + l - 6, "_users") == 0);
            sb_addf(sb,
                    "# HELP medusa_%s_%s%s %s: %s.\n# TYPE medusa_%s_%s%s %s\n"
                    "medusa_%s_%s%s %llu\n",
                    title, names[i], gauge ? "" : "_total", title, names[i], title, names[i],
                    gauge ? "" : "_total", gauge ? "gauge" : "counter", title, names[i],
                    gauge ? "" : "_total", (unsigned long long)values[i]);
        }
        return;
    }
    int json = fmt == MODULE_STATS_JSON;
    if (json)
        sb_adds(sb, "{");
    else
        sb_addf(sb, "%s:", title);
    for (int i = 0; i < n; i++)
        sb_addf(sb, json ? "%s\"%s\":%llu" : "%s %s %llu", i ? "," : "", names[i],
                (unsigned long long)values[i]);
    sb_adds(sb, json ? "}" : "\n");
}
