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
 * protocols stop reading from their clients while it is non-zero.
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

enum msg_type {
    MSG_STOP = 1,      /* to worker: a = grace period in ms (0: now) */
    MSG_CONFIG,        /* to worker: ptr = struct config * (one reference) */
    MSG_LISTEN_ADD,    /* to worker: ptr = struct listener_sock * */
    MSG_LISTEN_REMOVE, /* to worker: a = listener id */
    MSG_STATS_REQ,     /* to worker: a = request id */
    MSG_STATS_REPLY,   /* to supervisor: a = request id, ptr = struct worker_stats_snapshot * */
    MSG_WORKER_EXITED, /* to supervisor: from = worker id */
    MSG_PROTO,         /* protocol-defined: proto = index, sub = subtype */
    MSG_ADMIN,         /* to worker: sub = enum admin_query, a = query id, b = argument,
                          ptr = a string argument or NULL */
    MSG_ADMIN_REPLY,   /* to supervisor: a = query id, b = a number, ptr = text or NULL */
    MSG_HANDOFF,       /* to worker: give one socket of listener a to worker b */
    MSG_DRAIN,         /* to worker: give every socket to worker b, then stop within a ms */
};

/* What the admin console asks workers (MSG_ADMIN). */
enum admin_query {
    ADMIN_CONNS = 1,    /* ptr: service name filter or NULL; b: 1 for JSON lines */
    ADMIN_KILL,         /* b: connection id; reply b: 1 if it was this worker's */
    ADMIN_LISTENER_OFF, /* ptr: an address or a service name; reply b: sockets */
    ADMIN_LISTENER_ON,  /* ptr: an address or a service name; reply b: sockets */
};

typedef void bus_dispatch_fn(struct msg *m, void *arg);

/* Supervisor: create the inbox for id (idempotent). 0 or -1. */
int bus_register(int id);
void bus_set_live(int id, int live);
int bus_is_live(int id);
/* Highest worker id ever made live; iterate 1..n and skip dead slots. */
int bus_max_worker(void);
size_t bus_inbox_depth(int id);
/* Frees every inbox; only when no other thread runs. */
void bus_shutdown(void);

/* Calling thread becomes `id`: its inbox is polled on `base`, and each
 * message is passed to dispatch, which owns it (msg_release when done). */
int bus_thread_init(int id, struct event_base *base, bus_dispatch_fn *dispatch, void *arg);
void bus_thread_fini(void);
int bus_self(void);

void bus_send(int to, struct msg *m);
size_t bus_backlog(void);
