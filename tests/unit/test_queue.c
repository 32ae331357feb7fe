/* core/queue: single and multiple producers, full queue, wrap-around. */
#include "core/queue.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

static void single_producer_fifo(void **state)
{
    (void)state;
    struct queue *q = queue_new(8);
    assert_non_null(q);
    struct msg m = {0}, out;
    assert_int_equal(queue_pop(q, &out), 0);
    for (uint64_t i = 0; i < 5; i++) {
        m.a = i;
        assert_int_equal(queue_push(q, &m), 0);
    }
    assert_int_equal(queue_depth(q), 5);
    queue_ack(q);
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(queue_pop(q, &out), 1);
        assert_int_equal(out.a, i);
    }
    assert_int_equal(queue_pop(q, &out), 0);
    queue_free(q);
}

static void full_queue_refuses(void **state)
{
    (void)state;
    struct queue *q = queue_new(4);
    struct msg m = {0}, out;
    for (int i = 0; i < 4; i++) {
        m.a = (uint64_t)i;
        assert_int_equal(queue_push(q, &m), 0);
    }
    m.a = 99;
    assert_int_equal(queue_push(q, &m), -1); /* full: refused, not lost */
    assert_int_equal(queue_pop(q, &out), 1);
    assert_int_equal(out.a, 0);
    assert_int_equal(queue_push(q, &m), 0); /* room again */
    for (int i = 1; i < 4; i++) {
        assert_int_equal(queue_pop(q, &out), 1);
        assert_int_equal(out.a, (uint64_t)i);
    }
    assert_int_equal(queue_pop(q, &out), 1);
    assert_int_equal(out.a, 99);
    queue_free(q);
}

static void wraps_around_many_times(void **state)
{
    (void)state;
    struct queue *q = queue_new(4);
    struct msg m = {0}, out;
    uint64_t next_in = 0, next_out = 0;
    for (int round = 0; round < 1000; round++) {
        int burst = 1 + round % 4;
        for (int i = 0; i < burst; i++) {
            m.a = next_in++;
            assert_int_equal(queue_push(q, &m), 0);
        }
        for (int i = 0; i < burst; i++) {
            assert_int_equal(queue_pop(q, &out), 1);
            assert_int_equal(out.a, next_out++);
        }
    }
    assert_int_equal(queue_pop(q, &out), 0);
    queue_free(q);
}

static int freed;
static void count_free(void *p)
{
    freed++;
    free(p);
}

static void free_releases_payloads(void **state)
{
    (void)state;
    struct queue *q = queue_new(8);
    for (int i = 0; i < 3; i++) {
        struct msg m = {.ptr = malloc(16), .free_fn = count_free};
        assert_int_equal(queue_push(q, &m), 0);
    }
    freed = 0;
    queue_free(q);
    assert_int_equal(freed, 3);
}

#define PRODUCERS 4
#define PER_PRODUCER 20000

struct producer {
    struct queue *q;
    uint16_t id;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (uint64_t i = 0; i < PER_PRODUCER; i++) {
        struct msg m = {.from = p->id, .a = i};
        while (queue_push(p->q, &m) < 0)
            sched_yield();
    }
    return NULL;
}

static void multi_producer_keeps_order(void **state)
{
    (void)state;
    struct queue *q = queue_new(64); /* small, so producers hit "full" */
    pthread_t t[PRODUCERS];
    struct producer p[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){q, (uint16_t)i};
        assert_int_equal(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    }
    uint64_t next[PRODUCERS] = {0};
    uint64_t total = 0;
    struct msg out;
    while (total < (uint64_t)PRODUCERS * PER_PRODUCER) {
        if (!queue_pop(q, &out)) {
            sched_yield();
            continue;
        }
        assert_true(out.from < PRODUCERS);
        assert_int_equal(out.a, next[out.from]);
        next[out.from]++;
        total++;
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(queue_pop(q, &out), 0);
    queue_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_producer_fifo),       cmocka_unit_test(full_queue_refuses),
        cmocka_unit_test(wraps_around_many_times),    cmocka_unit_test(free_releases_payloads),
        cmocka_unit_test(multi_producer_keeps_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
