/*
 * Queue throughput: messages per second from 1, 2 and 4 producer threads
 * into one consumer that sleeps on the eventfd as a worker does. Prints a
 * table; not a test (no assertion on timing).
 * usage: bench_queue [messages per run, default 4000000]
 */
#include "core/queue.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct producer {
    struct queue *q;
    uint64_t count;
    uint16_t id;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (uint64_t i = 0; i < p->count; i++) {
        struct msg m = {.from = p->id, .a = i};
        while (queue_push(p->q, &m) < 0)
            sched_yield();
    }
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 4000000;
    printf("| producers | messages | seconds | messages/s | wake-ups |\n");
    printf("|---|---|---|---|---|\n");
    for (int n = 1; n <= 4; n *= 2) {
        struct queue *q = queue_new(65536);
        pthread_t t[4];
        struct producer p[4];
        double t0 = now();
        for (int i = 0; i < n; i++) {
            p[i] = (struct producer){q, total / (uint64_t)n, (uint16_t)i};
            pthread_create(&t[i], NULL, produce, &p[i]);
        }
        uint64_t got = 0, wakeups = 0, want = (total / (uint64_t)n) * (uint64_t)n;
        struct pollfd pfd = {.fd = queue_fd(q), .events = POLLIN};
        struct msg m;
        while (got < want) {
            poll(&pfd, 1, 1000);
            wakeups++;
            queue_ack(q);
            while (queue_pop(q, &m))
                got++;
        }
        double dt = now() - t0;
        for (int i = 0; i < n; i++)
            pthread_join(t[i], NULL);
        printf("| %d | %llu | %.3f | %.0f | %llu |\n", n, (unsigned long long)got, dt,
               (double)got / dt, (unsigned long long)wakeups);
        queue_free(q);
    }
    return 0;
}
