/*
 * Queue stress: 4 producer threads x 1,000,000 messages into one consumer
 * that sleeps on the eventfd like a worker does. Nothing may be lost or
 * duplicated, and each producer's order must hold. Also built under TSan.
 * Optional argument: messages per producer.
 */
#include "core/queue.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#define PRODUCERS 4

struct producer {
    struct queue *q;
    uint16_t id;
    uint64_t count;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (uint64_t i = 0; i < p->count; i++) {
        struct msg m = {.from = p->id, .a = i, .b = i * 31 + p->id};
        while (queue_push(p->q, &m) < 0)
            sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t per = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    struct queue *q = queue_new(4096);
    pthread_t t[PRODUCERS];
    struct producer p[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){q, (uint16_t)i, per};
        pthread_create(&t[i], NULL, produce, &p[i]);
    }
    uint64_t next[PRODUCERS] = {0}, total = 0, wakeups = 0;
    struct pollfd pfd = {.fd = queue_fd(q), .events = POLLIN};
    while (total < per * PRODUCERS) {
        /* Sleep on the eventfd as an event loop would: a lost wake-up
         * shows as a hang (caught by ctest's timeout). */
        if (poll(&pfd, 1, 10000) != 1) {
            fprintf(stderr, "no wake-up within 10 s at %llu messages\n", (unsigned long long)total);
            return 1;
        }
        wakeups++;
        queue_ack(q);
        struct msg m;
        while (queue_pop(q, &m)) {
            if (m.from >= PRODUCERS || m.a != next[m.from] || m.b != m.a * 31 + m.from) {
                unsigned long long want = m.from < PRODUCERS ? next[m.from] : 0;
                fprintf(stderr, "producer %u: got %llu, expected %llu\n", m.from,
                        (unsigned long long)m.a, want);
                return 1;
            }
            next[m.from]++;
            total++;
        }
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);
    struct msg m;
    if (queue_pop(q, &m)) {
        fprintf(stderr, "a message beyond the expected count\n");
        return 1;
    }
    queue_free(q);
    printf("%llu messages from %d producers, in order, %llu wake-ups\n", (unsigned long long)total,
           PRODUCERS, (unsigned long long)wakeups);
    return 0;
}
