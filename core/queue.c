/*
 * Bounded MPSC ring with eventfd wake-up; the algorithm is described in
 * queue.h.
 *
 * Wake-ups are coalesced by `signaled`: a producer writes the eventfd only
 * when it flips signaled from 0 to 1, and the consumer flips it back with an
 * exchange before draining. Because both sides use read-modify-writes on the
 * same variable, either the producer's exchange comes first (and the
 * consumer's exchange synchronises with it, so the drain sees the message) or
 * the consumer's does (and the producer sees 0 and writes the eventfd).
 */
#include "core/queue.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct queue *queue_new(size_t capacity)
{
    size_t cap = 2;
    while (cap < capacity)
        cap <<= 1;
    struct queue *q = aligned_alloc(64, (sizeof *q + 63) & ~(size_t)63);
    if (!q)
        return NULL;
    q->cells = calloc(cap, sizeof *q->cells);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!q->cells || q->efd < 0) {
        int e = errno;
        free(q->cells);
        if (q->efd >= 0)
            close(q->efd);
        free(q);
        errno = e;
        return NULL;
    }
    q->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        atomic_init(&q->cells[i].seq, i);
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    atomic_init(&q->signaled, 0);
    return q;
}

void queue_free(struct queue *q)
{
    if (!q)
        return;
    struct msg m;
    while (queue_pop(q, &m))
        msg_release(&m);
    close(q->efd);
    free(q->cells);
    free(q);
}

int queue_push(struct queue *q, const struct msg *m)
{
    size_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
    struct queue_cell *cell;
    for (;;) {
        cell = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            return -1; /* the consumer has not freed this cell yet: full */
        } else {
            pos = atomic_load_explicit(&q->head, memory_order_relaxed);
        }
    }
    cell->m = *m;
    atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
    if (atomic_exchange_explicit(&q->signaled, 1, memory_order_acq_rel) == 0) {
        uint64_t one = 1;
        ssize_t w = write(q->efd, &one, sizeof one);
        (void)w; /* EAGAIN means the counter is already non-zero: still woken */
    }
    return 0;
}

int queue_pop(struct queue *q, struct msg *out)
{
    size_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    struct queue_cell *cell = &q->cells[pos & q->mask];
    size_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
    if (seq != pos + 1)
        return 0; /* empty, or the producer of this cell has not published */
    *out = cell->m;
    atomic_store_explicit(&cell->seq, pos + q->mask + 1, memory_order_release);
    atomic_store_explicit(&q->tail, pos + 1, memory_order_relaxed);
    return 1;
}

int queue_fd(const struct queue *q)
{
    return q->efd;
}

void queue_ack(struct queue *q)
{
    uint64_t v;
    ssize_t r = read(q->efd, &v, sizeof v);
    (void)r;
    atomic_exchange_explicit(&q->signaled, 0, memory_order_acq_rel);
}

size_t queue_depth(struct queue *q)
{
    size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    return head >= tail ? head - tail : 0;
}
