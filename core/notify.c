/*
 * What systemd is told (sd_notify), on the supervisor thread.
 *
 * A tick (every second, or a third of WatchdogSec when that is shorter)
 * sends every worker a ping through its inbox; a worker answers from its
 * event loop. So:
 *   - READY=1 is sent once every worker has answered a ping sent after the
 *     listeners: messages are handled in order, so each worker then serves
 *     every listener;
 *   - WATCHDOG=1 is sent only while every worker has answered some ping
 *     within half of WatchdogSec: a busy loop still answers, a wedged one
 *     does not, and systemd restarts the service;
 *   - STATUS= says workers and open connections, when that changes.
 * RELOADING=1 (with MONOTONIC_USEC) and STOPPING=1 come from the reload and
 * the stop.
 */
#include "core/bus.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/supervisor_impl.h"
#include "core/worker.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The watchdog is fed while every worker has answered some ping within
 * half of WatchdogSec: a loop that is merely busy still answers, one that
 * is wedged does not. */
static int all_alive(const struct supervisor *s, uint64_t now, int warn)
{
    int ok = 1;
    for (int i = 0; i < s->nworkers; i++) {
        int id = s->workers[i]->id;
        if (s->last_ok[id] && now - s->last_ok[id] > s->watchdog_usec / 2) {
            if (warn)
                log_warn(NULL,
                         "worker %d has not answered for %llu ms: the systemd watchdog "
                         "is not fed",
                         id, (unsigned long long)(now - s->last_ok[id]) / 1000);
            ok = 0;
        }
    }
    return ok;
}

/* Has every worker answered a ping sent after the listeners? */
static int all_ready(const struct supervisor *s)
{
    for (int i = 0; i < s->nworkers; i++)
        if (s->ponged[s->workers[i]->id] < s->ready_seq)
            return 0;
    return 1;
}

static void update_status(struct supervisor *s)
{
    uint64_t active = 0;
    int running = 0;
    for (int i = 0; i < s->nworkers; i++) {
        struct worker_stats_snapshot ws;
        stats_read(s->workers[i]->id, &ws);
        active += ws.active;
        running += !s->workers[i]->draining;
    }
    char status[sizeof s->status];
    snprintf(status, sizeof status, "%s: %d worker%s, %llu open connection%s",
             s->stopping ? "stopping" : "running", running, running == 1 ? "" : "s",
             (unsigned long long)active, active == 1 ? "" : "s");
    if (strcmp(status, s->status) != 0) {
        memcpy(s->status, status, sizeof status);
        sd_notifyf(0, "STATUS=%s", status);
    }
}

static void ready_if_answered(struct supervisor *s)
{
    if (!s->ready_pending || !all_ready(s))
        return;
    s->ready_pending = 0;
    s->status[0] = '\0';
    sd_notifyf(0, "READY=1\nMAINPID=%d", (int)getpid());
    update_status(s);
}

static void ping_all(struct supervisor *s)
{
    s->ping_seq++;
    uint64_t now = now_us();
    for (int i = 0; i < s->nworkers; i++) {
        int id = s->workers[i]->id;
        struct msg m = {.type = MSG_PING, .a = s->ping_seq};
        if (!s->last_ok[id]) /* a new worker: it has until then to answer */
            s->last_ok[id] = now;
        bus_send(id, &m);
    }
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct supervisor *s = arg;
    if (s->watchdog_usec && !s->ready_pending && !s->stopping && all_alive(s, now_us(), 1))
        sd_notify(0, "WATCHDOG=1");
    if (!s->ready_pending)
        update_status(s);
    ping_all(s);
}

void notify_start(struct supervisor *s)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0)
        s->watchdog_usec = usec;
    uint64_t period = 1000000;
    if (s->watchdog_usec && s->watchdog_usec / 3 < period)
        period = s->watchdog_usec / 3;
    s->notify_ev = event_new(s->base, -1, EV_PERSIST, tick, s);
    struct timeval tv = {(time_t)(period / 1000000), (suseconds_t)(period % 1000000)};
    s->ready_pending = 1;
    if (s->notify_ev)
        event_add(s->notify_ev, &tv);
    ping_all(s); /* after the listeners were sent: READY follows the answers */
    s->ready_seq = s->ping_seq;
}

void notify_pong(struct supervisor *s, int worker, uint64_t seq)
{
    if (worker >= 1 && worker <= BUS_MAX_WORKERS && seq > s->ponged[worker]) {
        s->ponged[worker] = seq;
        s->last_ok[worker] = now_us();
    }
    ready_if_answered(s);
}

void notify_forget(struct supervisor *s, int worker)
{
    if (worker >= 1 && worker <= BUS_MAX_WORKERS) {
        s->ponged[worker] = 0;
        s->last_ok[worker] = 0;
    }
    ready_if_answered(s); /* one fewer to wait for */
}

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_stop(struct supervisor *s)
{
    if (s->notify_ev) {
        event_free(s->notify_ev);
        s->notify_ev = NULL;
    }
}
