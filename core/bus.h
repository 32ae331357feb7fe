/*
 * The message bus: every thread's inbox, and how threads send to each other.
 *
 * Thread ids: 0 is the supervisor, 1..BUS_MAX_WORKERS are workers. An inbox
 * (core/queue) is created once per id and lives until bus_shutdown(), so a
 * sender never races with an inbox being freed; a slot is "live" while a
 * thread serves it, and messages for a slot that is not live are released
 * and dropped (the receiver is gone, nobody could act on them).
 *
 * Back-pressure: bus_send never loses a message. When the destination's
 * inbox is full, the message waits in the sender's own overflow FIFO for
 * that destination (thread-local, so no lock), which a 1 ms timer retries in
 * order. bus_backlog() tells the sending thread how much is waiting, so
 * protocols stop reading from their clients while it is non-zero. A thread
 * that ends delivers what is still waiting before it goes, giving full
 * inboxes up to two seconds (and logging what it then has to drop).
 *
 * bus_register/bus_set_live are for the supervisor; the rest is for any
 * thread that called bus_thread_init.
 */
#pragma once

#include "core/queue.h"

struct event_base;

#define BUS_SUPERVISOR 0
#define BUS_MAX_WORKERS 256
#define BUS_INBOX_CAPACITY 65536

/* The core's own messages (msg.module == 0). Modules define their own
 * types, addressed with their module id (core/module.h). */
enum core_msg {
    MSG_STOP = 1,      /* to worker: a = grace period in ms (0: now) */
    MSG_CONFIG,        /* to worker: ptr = struct config * (one reference) */
    MSG_LISTEN_ADD,    /* to worker: ptr = struct listener_sock * */
    MSG_LISTEN_REMOVE, /* to worker: a = listener id (accept what is queued, then close) */
    MSG_LISTEN_SHED,   /* to worker: close b sockets of listener a (the kernel migrates
                          their queues: net.ipv4.tcp_migrate_req) */
    MSG_LISTEN_RETURN, /* to worker: give b sockets of listener a back (MSG_LISTEN_BACK) */
    MSG_LISTEN_BACK,   /* to supervisor: ptr = struct listener_sock *, queue and all */
    MSG_STATS_REQ,     /* to worker: a = request id */
    MSG_STATS_REPLY,   /* to supervisor: a = request id, ptr = struct worker_stats_snapshot * */
    MSG_WORKER_EXITED, /* to supervisor: from = worker id */
    MSG_DRAIN,         /* to worker: leave within a ms; b = DRAIN_* flags */
    MSG_CONN_MOVE,     /* worker -> supervisor -> worker: ptr = struct conn_move * */
    MSG_PING,          /* to worker: a = sequence; answered from its loop with MSG_PONG */
    MSG_PONG,          /* to supervisor: a = the ping's sequence */
    MSG_STALL,         /* to worker, test hook (MEDUSA_TEST_HOOKS=1): block the loop a ms */
    MSG_TLS_KEYS,      /* to worker: ptr = struct tls_keys * (one reference), core/tls.h */
    MSG_AUTH_FAILED,   /* to supervisor: ptr = the address text of a failed login (throttle.h) */
    MSG_AUTH_BLOCK,    /* to worker: a login wait for an address (throttle.h) */
};

/* MSG_DRAIN: what the leaving worker does with its TCP listening sockets. */
#define DRAIN_CLOSE_SOCKETS 1 /* close them: the kernel migrates their queues */
/* without it: give each back to the supervisor (MSG_LISTEN_BACK) */

typedef void bus_dispatch_fn(struct msg *m, void *arg);

/* Supervisor: create the inbox for id (idempotent). 0 or -1. */
int bus_register(int id);
void bus_set_live(int id, int on);
int bus_is_live(int id);
/* Highest worker id ever made live; iterate 1..n and skip dead slots. */
int bus_max_worker(void);
size_t bus_inbox_depth(int id);
/* Supervisor: hands every message left in the inbox of a worker that has
 * exited (joined, or never started) to fn, which owns each one; so what was
 * on its way to that worker, a socket or a session, is not lost. */
void bus_reclaim(int id, bus_dispatch_fn *fn, void *arg);
/* Frees every inbox; only when no other thread runs. */
void bus_shutdown(void);

/* Calling thread becomes `id`: its inbox is polled on `base`, and each
 * message is passed to dispatch, which owns it (msg_release when done). */
int bus_thread_init(int id, struct event_base *base, bus_dispatch_fn *dispatch, void *arg);
void bus_thread_fini(void);
int bus_self(void);

void bus_send(int to, struct msg *m);
size_t bus_backlog(void);
