/*
 * Failed-login throttling (throttle.h): the supervisor's counts, and each
 * thread's table of waits.
 *
 * Both tables are open-addressed by a keyed hash of the address text with
 * a short probe, so a lookup is a few comparisons and memory is fixed:
 * an insert that finds no free slot among its probes takes the one whose
 * news is oldest. Losing an entry that way only forgets a count early.
 */
#include "core/throttle.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "core/sbuf.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define HOST_MAX 64
#define PROBES 8
#define WAIT_SLOTS 1024  /* per thread */
#define COUNT_SLOTS 4096 /* the supervisor's */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static _Atomic uint64_t hash_key;

static uint64_t hash(const char *host)
{
    uint64_t k = atomic_load_explicit(&hash_key, memory_order_relaxed);
    if (!k) {
        if (getrandom(&k, sizeof k, 0) != sizeof k)
            k = (uint64_t)(uintptr_t)&k ^ (uint64_t)time(NULL);
        k |= 1;
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&hash_key, &zero, k);
        k = atomic_load(&hash_key);
    }
    uint64_t h = k ^ 0xcbf29ce484222325ull;
    for (const char *p = host; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    return h ^ (h >> 31);
}

/* ---- each thread's waits ---- */

struct wait {
    char host[HOST_MAX]; /* "" : free */
    uint64_t until;      /* monotonic ms */
    int blocked;
    int logged; /* a refusal of this wait was logged on this thread */
};

static _Thread_local struct wait *waits;
static _Thread_local uint64_t waits_end; /* the latest until in the table */

static struct wait *wait_find(const char *host, int add)
{
    if (!waits && (!add || !(waits = calloc(WAIT_SLOTS, sizeof *waits))))
        return NULL;
    uint64_t h = hash(host), now = add ? now_ms() : 0;
    struct wait *victim = NULL; /* free, else over, else the one that ends first */
    for (unsigned i = 0; i < PROBES; i++) {
        struct wait *w = &waits[(h + i) % WAIT_SLOTS];
        if (strcmp(w->host, host) == 0)
            return w;
        uint64_t rank = !w->host[0] ? 0 : w->until <= now ? 1 : w->until;
        if (add && (!victim || rank < (!victim->host[0]       ? 0
                                       : victim->until <= now ? 1
                                                              : victim->until)))
            victim = w;
    }
    if (!victim)
        return NULL;
    memset(victim, 0, sizeof *victim);
    snprintf(victim->host, sizeof victim->host, "%s", host);
    return victim;
}

static void wait_set(const char *host, uint64_t until, int blocked)
{
    struct wait *w = wait_find(host, until != 0);
    if (!w)
        return;
    if (!until) { /* cleared */
        w->host[0] = '\0';
        return;
    }
    w->until = until;
    w->blocked = blocked;
    w->logged = 0;
    if (until > waits_end)
        waits_end = until;
}

unsigned throttle_check(const char *host, int *blocked)
{
    *blocked = 0;
    if (!waits_end || strncmp(host, "unix:", 5) == 0)
        return 0;
    uint64_t now = now_ms();
    if (now >= waits_end)
        return 0;
    struct wait *w = wait_find(host, 0);
    if (!w || w->until <= now)
        return 0;
    unsigned left = (unsigned)((w->until - now + 999) / 1000);
    *blocked = w->blocked;
    if (!w->logged) {
        w->logged = 1;
        log_warn(host, "login refused without a check: %s for another %u s",
                 w->blocked ? "too many failed logins from this address" : "failed logins", left);
    }
    return left;
}

struct block_note {
    uint64_t until;
    int blocked;
    char host[HOST_MAX];
};

void throttle_on_block(struct msg *m)
{
    const struct block_note *b = m->ptr;
    wait_set(b->host, b->until, b->blocked);
}

void throttle_thread_end(void)
{
    free(waits);
    waits = NULL;
    waits_end = 0;
}

/* ---- the supervisor's counts ---- */

struct count {
    char host[HOST_MAX]; /* "" : free */
    unsigned fails;
    uint64_t first, last; /* of the window's failures */
    uint64_t until;       /* the wait it was given */
    int blocked;
};

static struct count *counts; /* COUNT_SLOTS, made at the first failure */
/* The settings in force (throttle_configure) */
static unsigned slow_after = 5, max_failures = 12;
static uint64_t window_ms = 600000, block_ms = 600000;

void throttle_configure(const struct config *cfg)
{
    slow_after = cfg->login_throttle.slow_after;
    max_failures = cfg->login_throttle.max_failures;
    window_ms = (uint64_t)cfg->login_throttle.window_s * 1000;
    block_ms = (uint64_t)cfg->login_throttle.block_s * 1000;
}

static struct count *count_find(const char *host, int add)
{
    if (!counts && (!add || !(counts = calloc(COUNT_SLOTS, sizeof *counts))))
        return NULL;
    uint64_t h = hash(host);
    struct count *victim = NULL; /* free, else the one whose last failure is oldest */
    for (unsigned i = 0; i < PROBES; i++) {
        struct count *c = &counts[(h + i) % COUNT_SLOTS];
        if (strcmp(c->host, host) == 0)
            return c;
        if (add && (!victim || (victim->host[0] && (!c->host[0] || c->last < victim->last))))
            victim = c;
    }
    if (!victim)
        return NULL;
    memset(victim, 0, sizeof *victim);
    snprintf(victim->host, sizeof victim->host, "%s", host);
    return victim;
}

static void tell_everyone(const char *host, uint64_t until, int blocked)
{
    wait_set(host, until, blocked); /* the console's */
    for (int id = 1; id <= bus_max_worker(); id++) {
        if (!bus_is_live(id))
            continue;
        struct block_note *b = malloc(sizeof *b);
        if (!b) {
            log_error(host, "out of memory telling worker %d of a login wait", id);
            continue;
        }
        b->until = until;
        b->blocked = blocked;
        snprintf(b->host, sizeof b->host, "%s", host);
        struct msg m = {.type = MSG_AUTH_BLOCK, .ptr = b, .free_fn = free};
        bus_send(id, &m);
    }
}

static void sup_failed(const char *host)
{
    if (!max_failures || strncmp(host, "unix:", 5) == 0)
        return;
    struct count *c = count_find(host, 1);
    if (!c)
        return;
    uint64_t now = now_ms();
    if ((c->fails && now - c->first > window_ms) || (c->blocked && now >= c->until)) {
        c->fails = 0; /* a new window, or a block served: a fresh start */
        c->blocked = 0;
    }
    if (!c->fails)
        c->first = now;
    c->fails++;
    c->last = now;
    if (c->fails >= max_failures) {
        c->until = now + block_ms;
        c->blocked = 1;
        log_warn(host, "%u failed logins in %llu s: logins from this address refused for %llu s",
                 c->fails, (unsigned long long)((now - c->first) / 1000),
                 (unsigned long long)(block_ms / 1000));
    } else if (slow_after && c->fails >= slow_after) {
        unsigned doublings = c->fails - slow_after;
        uint64_t wait = 1000ull << (doublings > 20 ? 20 : doublings);
        c->until = now + (wait < block_ms ? wait : block_ms);
        if (c->fails == slow_after)
            log_info(host, "%u failed logins: the next ones wait, 1 s and doubling", c->fails);
    } else {
        return;
    }
    tell_everyone(host, c->until, c->blocked);
}

void throttle_failed(const char *host)
{
    if (strncmp(host, "unix:", 5) == 0)
        return;
    if (bus_self() == BUS_SUPERVISOR) {
        sup_failed(host);
        return;
    }
    char *copy = strdup(host);
    if (!copy) {
        log_error(host, "out of memory reporting a failed login");
        return;
    }
    struct msg m = {.type = MSG_AUTH_FAILED, .ptr = copy, .free_fn = free};
    bus_send(BUS_SUPERVISOR, &m);
}

void throttle_sup_message(struct msg *m)
{
    sup_failed(m->ptr);
}

void throttle_sup_end(void)
{
    free(counts);
    counts = NULL;
}

struct snapshot {
    size_t n;
    struct block_note notes[];
};

void *throttle_snapshot(void)
{
    if (!counts)
        return NULL;
    uint64_t now = now_ms();
    size_t n = 0;
    for (size_t i = 0; i < COUNT_SLOTS; i++)
        n += counts[i].host[0] && counts[i].until > now;
    if (!n)
        return NULL;
    struct snapshot *s = malloc(sizeof *s + n * sizeof *s->notes);
    if (!s)
        return NULL;
    s->n = 0;
    for (size_t i = 0; i < COUNT_SLOTS; i++) {
        const struct count *c = &counts[i];
        if (!c->host[0] || c->until <= now)
            continue;
        struct block_note *b = &s->notes[s->n++];
        b->until = c->until;
        b->blocked = c->blocked;
        snprintf(b->host, sizeof b->host, "%s", c->host);
    }
    return s;
}

void throttle_thread_start(void *snapshot)
{
    struct snapshot *s = snapshot;
    for (size_t i = 0; s && i < s->n; i++)
        wait_set(s->notes[i].host, s->notes[i].until, s->notes[i].blocked);
    free(s);
}

void throttle_snapshot_free(void *snapshot)
{
    free(snapshot);
}

void throttle_report(struct sbuf *sb, int json)
{
    uint64_t now = now_ms();
    int first = 1;
    if (json)
        sb_adds(sb, "[");
    for (size_t i = 0; counts && i < COUNT_SLOTS; i++) {
        const struct count *c = &counts[i];
        int waiting = c->until > now;
        if (!c->host[0] || (!waiting && now - c->last > window_ms))
            continue;
        unsigned long long left = waiting ? (c->until - now + 999) / 1000 : 0;
        if (json) {
            sb_addf(sb, "%s{\"address\":\"", first ? "" : ",");
            sb_add_json(sb, c->host);
            sb_addf(sb, "\",\"failures\":%u,\"wait_seconds\":%llu,\"blocked\":%s}", c->fails, left,
                    waiting && c->blocked ? "true" : "false");
        } else {
            sb_addf(sb, "%s: %u failed logins%s", c->host, c->fails,
                    !waiting     ? ""
                    : c->blocked ? ", refused"
                                 : ", waiting");
            if (waiting)
                sb_addf(sb, " for %llu s", left);
            sb_adds(sb, "\n");
        }
        first = 0;
    }
    if (json)
        sb_adds(sb, "]\n");
    else if (first)
        sb_adds(sb, "no failed logins counted\n");
}

size_t throttle_clear(const char *host)
{
    size_t n = 0;
    for (size_t i = 0; counts && i < COUNT_SLOTS; i++) {
        struct count *c = &counts[i];
        if (!c->host[0] || (host && strcmp(c->host, host) != 0))
            continue;
        char h[HOST_MAX];
        snprintf(h, sizeof h, "%s", c->host);
        memset(c, 0, sizeof *c);
        tell_everyone(h, 0, 0);
        n++;
    }
    if (host && !n) /* its count may have made room for others: the waits may not */
        tell_everyone(host, 0, 0);
    return n;
}
