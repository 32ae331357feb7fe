/* echo (RFC 862); see echo.h and docs/writing-a-protocol.md. */
#include "protocols/echo/echo.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "core/worker.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

struct echo_cfg {
    unsigned max_output; /* bytes waiting for a client before it is dropped */
    unsigned idle_ms;
};

/* Per worker: one writer (that worker), any reader. */
enum { ACTIVE, ACCEPTED, ECHOED, DROPPED, NCOUNTERS };
static const char *const counter_names[NCOUNTERS] = {"connections_active", "connections_accepted",
                                                     "bytes_echoed", "dropped_not_reading"};
static struct {
    _Atomic uint64_t n[NCOUNTERS];
} __attribute__((aligned(64))) counters[BUS_MAX_WORKERS + 1];
#define COUNT(c, which, by) stat_add(&counters[(c)->w->id].n[which], by)

static const char *const echo_keys[] = {"max_output", "idle_timeout", NULL};

static int echo_parse(struct cfg_ctx *ctx, const config_setting_t *block, void **out)
{
    struct echo_cfg *e = calloc(1, sizeof *e);
    long long max = 65536;
    *out = e; /* the caller frees it, on failure too */
    if (!e)
        return cfg_error(ctx, block, "out of memory");
    e->idle_ms = 300000;
    if (cfg_int(ctx, block, "max_output", 1024, 1 << 30, &max) < 0 ||
        cfg_duration_ms(ctx, block, "idle_timeout", 86400, &e->idle_ms) < 0)
        return -1;
    e->max_output = (unsigned)max;
    return 0;
}

static void echo_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    const struct echo_cfg *e = c->svc->pcfg;
    struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
    size_t n = evbuffer_get_length(in);
    if (evbuffer_get_length(out) + n > e->max_output) {
        log_warn(c->peer, "echo: the client does not read; dropped at %u bytes", e->max_output);
        COUNT(c, DROPPED, 1);
        conn_count_error(c);
        conn_close(c);
        return;
    }
    COUNT(c, ECHOED, n);
    evbuffer_add_buffer(out, in);
}

/* End of input, an error, or the idle timeout: done. */
static void echo_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev, (void)what;
    conn_close(arg);
}

/* A new session, or one that moved here: the buffers are all its state. */
static void echo_start(void *state, struct conn *c, void *blob)
{
    (void)state, (void)blob;
    const struct echo_cfg *e = c->svc->pcfg;
    struct timeval idle = {e->idle_ms / 1000, (e->idle_ms % 1000) * 1000};
    COUNT(c, ACTIVE, 1);
    bufferevent_setcb(c->bev, echo_read, NULL, echo_event, c);
    bufferevent_set_timeouts(c->bev, e->idle_ms ? &idle : NULL, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        echo_read(c->bev, c); /* it arrived before the move */
}

static void echo_accept(void *state, struct conn *c)
{
    COUNT(c, ACCEPTED, 1);
    echo_start(state, c, NULL);
}

static void echo_closed(void *state, struct conn *c)
{
    (void)state;
    stat_sub(&counters[c->w->id].n[ACTIVE], 1);
}

/* Leaving: move. Stopping: echo has no way to say so; the grace period ends it. */
static void echo_drain(void *state, struct conn *c, unsigned grace_ms, int move)
{
    (void)grace_ms;
    if (move) {
        echo_closed(state, c);
        conn_move(c, NULL, NULL);
    }
}

static void echo_describe(void *state, struct conn *c, char *buf, size_t len)
{
    (void)state;
    snprintf(buf, len, "echoing, %zu bytes waiting",
             evbuffer_get_length(bufferevent_get_output(c->bev)));
}

static void echo_stats(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb)
{
    (void)cfg;
    uint64_t n[NCOUNTERS] = {0};
    for (int w = 1; w <= bus_max_worker(); w++)
        for (int i = 0; i < NCOUNTERS; i++)
            n[i] += stat_get(&counters[w].n[i]);
    stats_counters(sb, fmt, "echo", counter_names, n, NCOUNTERS);
}

const struct module echo_module = {
    .name = "echo",
    .flags = MODULE_TCP_NODELAY,
    .keys = echo_keys,
    .parse = echo_parse,
    .free_cfg = free,
    .accept = echo_accept,
    .adopt = echo_start,
    .closed = echo_closed,
    .drain = echo_drain,
    .describe = echo_describe,
    .stats = echo_stats,
};
