/*
 * Inbox registry, inbox polling and the sender-side overflow FIFO. The policy
 * is described in bus.h.
 */
#include "core/bus.h"

#include "core/log.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#define DRAIN_BUDGET 4096

static struct queue *_Atomic inboxes[BUS_MAX_WORKERS + 1];
static _Atomic int live[BUS_MAX_WORKERS + 1];
static _Atomic int max_worker;

struct pending {
    struct pending *next;
    struct msg m;
};

struct bus_self {
    int id;
    struct queue *inbox;
    struct event *inbox_ev;
    struct event *retry_ev;
    bus_dispatch_fn *dispatch;
    void *arg;
    struct pending *head[BUS_MAX_WORKERS + 1], *tail[BUS_MAX_WORKERS + 1];
    size_t backlog;
};

static _Thread_local struct bus_self *self;

int bus_register(int id)
{
    if (id < 0 || id > BUS_MAX_WORKERS)
        return -1;
    if (atomic_load(&inboxes[id]))
        return 0;
    struct queue *q = queue_new(BUS_INBOX_CAPACITY);
    if (!q)
        return -1;
    atomic_store(&inboxes[id], q);
    return 0;
}

void bus_set_live(int id, int on)
{
    atomic_store(&live[id], on);
    if (on && id > atomic_load(&max_worker))
        atomic_store(&max_worker, id);
}

int bus_is_live(int id)
{
    return id >= 0 && id <= BUS_MAX_WORKERS && atomic_load(&live[id]);
}

int bus_max_worker(void)
{
    return atomic_load(&max_worker);
}

size_t bus_inbox_depth(int id)
{
    struct queue *q = atomic_load(&inboxes[id]);
    return q ? queue_depth(q) : 0;
}

void bus_reclaim(int id, bus_dispatch_fn *fn, void *arg)
{
    struct queue *q = atomic_load(&inboxes[id]);
    struct msg m;
    while (q && queue_pop(q, &m))
        fn(&m, arg);
}

void bus_shutdown(void)
{
    for (int i = 0; i <= BUS_MAX_WORKERS; i++) {
        queue_free(atomic_exchange(&inboxes[i], NULL));
        atomic_store(&live[i], 0);
    }
    atomic_store(&max_worker, 0);
}

static void inbox_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct bus_self *s = arg;
    queue_ack(s->inbox);
    struct msg m;
    int n = 0;
    while (n < DRAIN_BUDGET && queue_pop(s->inbox, &m)) {
        s->dispatch(&m, s->arg);
        n++;
    }
    /* More waiting: yield to the sockets, then come back without a syscall. */
    if (n == DRAIN_BUDGET)
        event_active(s->inbox_ev, EV_READ, 0);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct bus_self *s = arg;
    for (int to = 0; to <= BUS_MAX_WORKERS; to++) {
        struct queue *q = atomic_load(&inboxes[to]);
        while (s->head[to]) {
            struct pending *p = s->head[to];
            if (!bus_is_live(to)) {
                msg_release(&p->m);
            } else if (queue_push(q, &p->m) < 0) {
                break;
            }
            s->head[to] = p->next;
            if (!s->head[to])
                s->tail[to] = NULL;
            free(p);
            s->backlog--;
        }
    }
    if (s->backlog) {
        struct timeval tv = {0, 1000};
        event_add(s->retry_ev, &tv);
    }
}

int bus_thread_init(int id, struct event_base *base, bus_dispatch_fn *dispatch, void *arg)
{
    struct bus_self *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->id = id;
    s->inbox = atomic_load(&inboxes[id]);
    s->dispatch = dispatch;
    s->arg = arg;
    s->inbox_ev = event_new(base, queue_fd(s->inbox), EV_READ | EV_PERSIST, inbox_cb, s);
    s->retry_ev = evtimer_new(base, retry_cb, s);
    if (!s->inbox_ev || !s->retry_ev || event_add(s->inbox_ev, NULL) < 0) {
        if (s->inbox_ev)
            event_free(s->inbox_ev);
        if (s->retry_ev)
            event_free(s->retry_ev);
        free(s);
        return -1;
    }
    /* Messages may have arrived before this thread started polling. */
    event_active(s->inbox_ev, EV_READ, 0);
    self = s;
    return 0;
}

/* How long a thread that ends waits for full inboxes to take what it still
 * has for them (a leaving worker's last chat lines, say). */
#define FINI_WAIT_MS 2000

void bus_thread_fini(void)
{
    struct bus_self *s = self;
    if (!s)
        return;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    size_t dropped = 0;
    for (int to = 0; to <= BUS_MAX_WORKERS; to++) {
        struct queue *q = atomic_load(&inboxes[to]);
        while (s->head[to]) {
            struct pending *p = s->head[to];
            int pushed = 0;
            long waited = 0;
            while (bus_is_live(to) && !(pushed = (queue_push(q, &p->m) == 0)) &&
                   waited < FINI_WAIT_MS) {
                sched_yield(); /* the receiver is busy: it will make room */
                clock_gettime(CLOCK_MONOTONIC, &now);
                waited =
                    (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            }
            if (!pushed) {
                dropped += bus_is_live(to);
                msg_release(&p->m);
            }
            s->head[to] = p->next;
            free(p);
        }
    }
    if (dropped)
        log_error(NULL, "%zu message(s) for busy threads dropped at exit after %d ms", dropped,
                  FINI_WAIT_MS);
    event_free(s->inbox_ev);
    event_free(s->retry_ev);
    free(s);
    self = NULL;
}

int bus_self(void)
{
    return self ? self->id : -1;
}

void bus_send(int to, struct msg *m)
{
    struct bus_self *s = self;
    if (s)
        m->from = (uint16_t)s->id;
    struct queue *q = (to >= 0 && to <= BUS_MAX_WORKERS) ? atomic_load(&inboxes[to]) : NULL;
    if (!q || !bus_is_live(to)) {
        log_debug(NULL, "message %u for thread %d dropped: no such thread", m->type, to);
        msg_release(m);
        return;
    }
    /* Keep per-destination order: once something waits, everything waits. */
    if (!s || !s->head[to]) {
        if (queue_push(q, m) == 0)
            return;
        if (!s) {
            /* Only threads with a loop can hold an overflow; the others
             * (tests, start-up) spin politely, which never loses either. */
            while (queue_push(q, m) < 0)
                sched_yield();
            return;
        }
    }
    struct pending *p = malloc(sizeof *p);
    if (!p) {
        log_error(NULL, "out of memory queueing a message for thread %d; waiting", to);
        while (queue_push(q, m) < 0)
            sched_yield();
        return;
    }
    p->next = NULL;
    p->m = *m;
    if (s->tail[to])
        s->tail[to]->next = p;
    else
        s->head[to] = p;
    s->tail[to] = p;
    if (s->backlog++ == 0) {
        struct timeval tv = {0, 1000};
        event_add(s->retry_ev, &tv);
    }
}

size_t bus_backlog(void)
{
    return self ? self->backlog : 0;
}
