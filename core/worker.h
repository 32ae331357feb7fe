/*
 * A worker thread: its own event_base, its own listening sockets, and every
 * connection it accepts. The supervisor creates, starts and joins workers
 * and talks to them only through the bus; everything else here runs on the
 * worker's own thread.
 */
#pragma once

#include "core/stats.h"

#include <pthread.h>
#include <time.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct conn;
struct event;
struct event_base;
struct wlistener;

/* Handed to a worker in MSG_LISTEN_ADD; the worker owns fd and strings. */
struct listener_sock {
    uint32_t id;
    int fd;
    int disabled; /* the console turned it off: keep it off */
    char *service;
    char *text;
};
void listener_sock_free(void *p);

struct worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    struct config *cfg; /* current snapshot (a reference) */
    struct wlistener *listeners;
    struct conn *conns;
    size_t nconns;
    uint64_t next_conn_seq;
    void **proto_state; /* one per protocols_all entry */
    struct event *resume_ev, *grace_ev, *lag_ev;
    struct timespec lag_due; /* when lag_ev should fire */
    int accept_paused;       /* listeners off: at worker_connections or out of descriptors */
    int stopping;
    int handing_over;           /* stopping because it is being drained, not the server */
    int draining;               /* the supervisor's mark: leaving (supervisor thread only) */
    struct worker_stats *stats; /* stats_slot(id) */
};

/* Supervisor: creates the worker (and its inbox) with a reference to cfg. */
struct worker *worker_new(int id, struct config *cfg);
int worker_start(struct worker *w);
void worker_join_free(struct worker *w);

/* For conn.c: the connection left the worker's list. */
void worker_conn_gone(struct worker *w);
void *worker_proto_state(struct worker *w, int proto);
