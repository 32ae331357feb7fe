/*
 * A worker thread: its own event_base, its own listening sockets, and every
 * connection it accepts or adopts. The supervisor creates, starts and joins
 * workers and talks to them only through the bus; everything else here runs
 * on the worker's own thread, modules included.
 */
#pragma once

#include "core/list.h"
#include "core/stats.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct config;
struct conn;
struct event;
struct event_base;
struct module;

/* Handed to a worker in MSG_LISTEN_ADD (and back in MSG_LISTEN_BACK); the
 * holder owns fd and strings. */
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
    struct config *cfg;      /* current snapshot (a reference) */
    struct list listeners;   /* struct wlistener */
    struct list conns;       /* struct conn */
    struct list proxy_waits; /* accepted, waiting for their PROXY header */
    size_t nconns;
    void **mstate; /* [module id]: each module's worker state */
    struct event *resume_ev, *grace_ev, *lag_ev;
    struct timespec lag_due;    /* when lag_ev should fire */
    int accept_paused;          /* listeners off: at worker_connections or out of descriptors */
    int stopping;               /* no longer accepting: sessions finish, move, or are closed */
    int leaving;                /* stopping because the server scales down: sessions move */
    int draining;               /* the supervisor's mark: leaving (supervisor thread only) */
    struct worker_stats *stats; /* stats_slot(id) */
    struct tls_keys *tls_keys;  /* the ticket keys it starts with, until its thread takes them */
    void *throttle;             /* the login waits it starts with (core/throttle.h) */
    /* Events that repeat as fast as clients come, logged once a while with
     * how many there were (worker.c's log_due): refusals at
     * max_conns_per_ip, and pauses for lack of descriptors. */
    struct log_every {
        unsigned long n; /* since the last line */
        time_t at;       /* when that line was */
    } per_ip_refusals, accept_pauses;
    int attached; /* a thread serves it (worker_attach) */
};

/* ---- for modules, on the worker's own thread ---- */

/* The module's worker state (what its worker_init returned). */
void *worker_module_state(struct worker *w, const struct module *m);
/* The connection with this id, or NULL. */
struct conn *worker_find_conn(struct worker *w, uint64_t id);
/* What a connection is doing, from its module's describe(); "" if nothing. */
void worker_describe_conn(struct worker *w, struct conn *c, char *buf, size_t len);
/* Turns accepting on or off for every listener whose address or service
 * name is `which`; returns how many sockets matched. */
int worker_listeners_enable(struct worker *w, const char *which, int on);

/* ---- for the supervisor ---- */

/* Creates the worker (and its inbox) with a reference to cfg. */
struct worker *worker_new(int id, struct config *cfg);
int worker_start(struct worker *w);
void worker_join_free(struct worker *w);
/* A worker that never started. */
void worker_free(struct worker *w);

/* ---- a worker served by the calling thread ----
 * What the worker's own thread does when it starts (worker_attach: its
 * event loop in w->base, its bus inbox, every module's worker state) and
 * when it ends (worker_detach: listeners and connections closed, module
 * state disposed). The worker thread is these two around
 * event_base_dispatch; in-process tests (tests/fuzz) call them on their own
 * thread, run w->base themselves, and hand the worker connections with
 * worker_accept_fd, the path an accepted connection takes on a plain
 * listener of `service`. attach: 0 or -1 (detach still follows); accept:
 * 0, or -1 (fd closed) when the snapshot has no such service. */
int worker_attach(struct worker *w);
void worker_detach(struct worker *w);
int worker_accept_fd(struct worker *w, const char *service, int fd, const char *peer);
/* Closes every connection now, as a stop's grace period ends. */
void worker_close_conns(struct worker *w);

/* For conn.c: the connection left the worker's list. */
void worker_conn_gone(struct worker *w);
/* For conn.c: the TLS handshake is done; the module gets the connection. */
void worker_conn_ready(struct conn *c);
