/*
 * Per-worker counters. Each counter has exactly one writer, the worker that
 * owns it, which updates it with a relaxed load and store (no locked
 * instruction on the hot path); any thread may read it with a relaxed load.
 * A consistent snapshot of one worker is asked for through the bus
 * (MSG_STATS_REQ), which the worker answers from its own thread.
 */
#pragma once

#include "core/module.h"

#include <stdatomic.h>
#include <stdint.h>

struct config;
struct sbuf;

struct worker_stats {
    _Atomic uint64_t accepted, active, closed, bytes_in, bytes_out, errors;
    _Atomic uint64_t requests;            /* HTTP requests answered, chat lines said */
    _Atomic uint64_t moved_in, moved_out; /* sessions moved between workers */
    _Atomic uint64_t lag_us;              /* event-loop lag: the latest tick's lateness */
    _Atomic uint64_t refused;             /* at accept: over a service's max_conns_per_ip */
} __attribute__((aligned(64)));

/* Worker id -> its counters. Slots live as long as the process (like bus
 * inboxes), so any thread may read any worker's counters at any time, e.g.
 * for a status page; a slot is zeroed when a worker starts in it. */
struct worker_stats *stats_slot(int id);
/* Zeroes a slot for a worker starting in it (atomic stores: others may be
 * reading it). */
void stats_reset(int id);
/* When the process started (CLOCK_REALTIME seconds), for uptime. */
long long stats_started(void);

/* Every figure: uptime, the live workers' counters, then each module's
 * stats() under its name. Any thread. */
void stats_report(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb);
/* A module's flat counters, for its stats() hook: "title: a 1, b 2\n", the
 * JSON object {"a":1,"b":2}, or Prometheus families medusa_title_a_total
 * (names ending in _active or _users are gauges, without _total). */
void stats_counters(struct sbuf *sb, enum module_stats_format fmt, const char *title,
                    const char *const *names, const uint64_t *values, int n);

struct worker_stats_snapshot {
    int worker;
    uint64_t accepted, active, closed, bytes_in, bytes_out, errors, requests;
    uint64_t moved_in, moved_out, lag_us, refused;
};
/* One worker's counters, read now: each exact, though one may be a few
 * events ahead of another. Any thread. */
void stats_read(int id, struct worker_stats_snapshot *out);
/* Adds w's counts (not its gauges' maximum, nor its id) to total's. */
void stats_sum(struct worker_stats_snapshot *total, const struct worker_stats_snapshot *w);

static inline void stat_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void stat_sub(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

static inline uint64_t stat_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}
