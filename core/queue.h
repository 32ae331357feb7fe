/*
 * A bounded lock-free multi-producer single-consumer queue of fixed-size
 * messages, with an eventfd that wakes the consumer's event loop.
 *
 * The ring follows Dmitry Vyukov's bounded queue: every cell carries a
 * sequence number that tells producers whether it is free and the consumer
 * whether it is published, so producers only contend on one CAS of the head
 * and the consumer needs no atomic read-modify-write at all.
 *
 * Any thread may push. Only the owning thread may pop, ack or free.
 * A full queue is reported to the sender (queue_push returns -1); it never
 * drops a message. core/bus.h builds the back-pressure policy on top.
 *
 * A message that carries a pointer gives it away: the receiver owns it, and
 * frees it with free_fn (queue_free does so for messages never received).
 */
#pragma once

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct msg {
    uint16_t module; /* the addressee: 0 the core, else a module id (core/module.h) */
    uint16_t type;   /* the addressee's own: enum core_msg (core/bus.h) for the core */
    uint16_t from;   /* sender thread id */
    uint32_t len;    /* length of ptr's data, when that is a byte string */
    uint64_t a, b;   /* small arguments */
    void *ptr;       /* owned payload, or NULL */
    void (*free_fn)(void *);
};

struct queue_cell {
    _Atomic size_t seq;
    struct msg m;
};

struct queue {
    size_t mask;
    struct queue_cell *cells;
    int efd;
    alignas(64) _Atomic size_t head;  /* next slot producers claim */
    alignas(64) _Atomic size_t tail;  /* next slot the consumer reads; written by it only */
    alignas(64) _Atomic int signaled; /* a wake-up is pending on efd */
};

/* capacity is rounded up to a power of two, at least 2. NULL on failure. */
struct queue *queue_new(size_t capacity);
/* Frees the queue and every pointer still queued. Consumer thread only. */
void queue_free(struct queue *q);

/* 0 on success (and the consumer is woken), -1 when full. Any thread. */
int queue_push(struct queue *q, const struct msg *m);
/* 1 with *out filled, 0 when empty. Consumer thread only. */
int queue_pop(struct queue *q, struct msg *out);

/* The descriptor to poll for readability. */
int queue_fd(const struct queue *q);
/* Called by the consumer when queue_fd is readable, before it pops. */
void queue_ack(struct queue *q);
/* Approximate number of queued messages; any thread. */
size_t queue_depth(struct queue *q);

static inline void msg_release(struct msg *m)
{
    if (m->ptr && m->free_fn)
        m->free_fn(m->ptr);
    m->ptr = NULL;
}
