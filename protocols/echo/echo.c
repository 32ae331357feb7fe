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
static struct echo_counters {
    _Atomic uint64_t active, accepted, echoed, dropped;
} __attribute__((aligned(64))) counters[BUS_MAX_WORKERS + 1];

static const char *const echo_keys[] = {"max_output", "idle_timeout", NULL};

static int echo_parse(struct cfg_ctx *ctx, const config_setting_t *block, void **out)
{
    struct echo_cfg *e = calloc(1, sizeof *e);
    long long max = 65536;
    if (!e)
        return cfg_error(ctx, block, "out of memory");
    e->idle_ms = 300000;
    *out = e;
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
        stat_add(&counters[c->w->id].dropped, 1);
        conn_count_error(c);
        conn_close(c);
        return;
    }
    stat_add(&counters[c->w->id].echoed, n);
    evbuffer_add_buffer(out, in);
}

static void echo_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what; /* end of input, an error, or the idle timeout: done */
    conn_close(arg);
}

/* A new session, or one that moved here. */
static void echo_start(struct conn *c)
{
    const struct echo_cfg *e = c->svc->pcfg;
    struct timeval idle = {e->idle_ms / 1000, (e->idle_ms % 1000) * 1000};
    stat_add(&counters[c->w->id].active, 1);
    bufferevent_setcb(c->bev, echo_read, NULL, echo_event, c);
    bufferevent_set_timeouts(c->bev, e->idle_ms ? &idle : NULL, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        echo_read(c->bev, c); /* it arrived before the move */
}

static void echo_accept(void *state, struct conn *c)
{
    (void)state;
    stat_add(&counters[c->w->id].accepted, 1);
    echo_start(c);
}

static void echo_adopt(void *state, struct conn *c, void *blob)
{
    (void)state;
    (void)blob; /* the buffers are the whole session */
    echo_start(c);
}

static void echo_closed(void *state, struct conn *c)
{
    (void)state;
    stat_sub(&counters[c->w->id].active, 1);
}

static void echo_drain(void *state, struct conn *c, unsigned grace_ms, int move)
{
    (void)state;
    (void)grace_ms; /* a stop: echo has no way to say so; it ends with the grace period */
    if (move) {
        stat_sub(&counters[c->w->id].active, 1);
        conn_move(c, NULL, NULL);
    }
}

static void echo_describe(void *state, struct conn *c, char *buf, size_t len)
{
    (void)state;
    size_t waiting = evbuffer_get_length(bufferevent_get_output(c->bev));
    snprintf(buf, len, "echoing, %zu byte%s waiting", waiting, waiting == 1 ? "" : "s");
}

static void echo_stats(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb)
{
    (void)cfg;
    unsigned long long n[4] = {0};
    for (int w = 1; w <= bus_max_worker(); w++) {
        n[0] += stat_get(&counters[w].active);
        n[1] += stat_get(&counters[w].accepted);
        n[2] += stat_get(&counters[w].echoed);
        n[3] += stat_get(&counters[w].dropped);
    }
    if (fmt == MODULE_STATS_JSON)
        sb_addf(sb,
                "{\"connections_active\":%llu,\"connections_accepted\":%llu,"
                "\"bytes_echoed\":%llu,\"dropped_not_reading\":%llu}",
                n[0], n[1], n[2], n[3]);
    else
        sb_addf(sb, "echo: %llu active, %llu accepted, %llu bytes echoed, %llu dropped\n", n[0],
                n[1], n[2], n[3]);
}

const struct module echo_module = {
    .name = "echo",
    .flags = MODULE_TCP_NODELAY,
    .keys = echo_keys,
    .parse = echo_parse,
    .free_cfg = free,
    .accept = echo_accept,
    .adopt = echo_adopt,
    .closed = echo_closed,
    .drain = echo_drain,
    .describe = echo_describe,
    .stats = echo_stats,
};
