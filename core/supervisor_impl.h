/*
 * Inside the supervisor: what supervisor.c (life cycle, reload, signals,
 * the functions the console calls) and scaling.c (workers coming and going,
 * where listening sockets and moving sessions go) share. Supervisor thread
 * only.
 */
#pragma once

#include "core/bus.h"
#include "core/list.h"
#include "core/listener.h"
#include "core/stats.h"
#include "core/supervisor.h"

#include <stdint.h>

struct config;
struct event_base;
struct listener_sock;
struct worker;

struct sup_listener {
    struct list node;
    uint32_t id;
    int disabled; /* by the console */
    int keep_fd;  /* Unix: the supervisor's own copy, to dup for new workers */
    /* TCP: this listener's SO_REUSEPORT sockets, as the supervisor placed
     * them: how many each worker holds, and how many are on their way back
     * (MSG_LISTEN_RETURN sent, MSG_LISTEN_BACK not yet received). */
    uint16_t held[BUS_MAX_WORKERS + 1];
    unsigned returning;
    uint16_t owed[BUS_MAX_WORKERS + 1]; /* of those, how many each worker still owes */
    char *service;
    struct listen_addr addr;
};

struct supervisor {
    struct event_base *base;
    struct config *cfg;
    const char *config_path;
    struct worker **workers; /* live threads, running or draining */
    int nworkers;
    int workers_override; /* -w: the configuration's 'workers' does not apply */
    int running;          /* threads not yet exited */
    /* Workers that left, newest last, shown as "stopped" until their id is
     * used again; their counters stay in their stats slots. */
    int stopped[SUP_STOPPED_SHOWN];
    int nstopped;
    struct list listeners; /* struct sup_listener */
    uint32_t next_listener_id;
    int stopping;
    void **mstate;        /* [module id]: each module's supervisor state */
    unsigned next_target; /* round robin over running workers for moved sessions */
    /* Statistics requests in flight (SIGUSR2), and who has not answered. */
    uint64_t stats_req;
    int stats_pending;
    uint8_t stats_asked[BUS_MAX_WORKERS + 1];
    struct worker_stats_snapshot stats_total;
    /* systemd (notify.c): READY once every worker has answered a ping sent
     * after its listeners; WATCHDOG only while every loop answers; STATUS. */
    struct event *notify_ev;
    uint64_t ping_seq, ready_seq;
    uint64_t ponged[BUS_MAX_WORKERS + 1];  /* the latest ping each worker answered */
    uint64_t last_ok[BUS_MAX_WORKERS + 1]; /* monotonic us of that answer (or of its
                                              first ping); 0: not pinged yet */
    int ready_pending;
    uint64_t watchdog_usec;
    char status[160];
};

static inline struct sup_listener *sup_listener_of(struct list *pos)
{
    return list_entry(pos, struct sup_listener, node);
}

/* notify.c: systemd's view (sd_notify) */
void notify_start(struct supervisor *s);
void notify_pong(struct supervisor *s, int worker, uint64_t seq);
void notify_reloading(void);
void notify_stop(struct supervisor *s);
/* A worker id that left: its answers are forgotten (the id may come back). */
void notify_forget(struct supervisor *s, int worker);

/* supervisor.c */
int sup_nrunning(const struct supervisor *s);
void sup_send_listener(int worker, uint32_t id, int fd, const char *service, const char *text,
                       int disabled);

/* scaling.c */
/* Every TCP listener: sockets opened, shed or sent back until each running
 * worker holds its share (scaling.c explains the two modes). */
void scaling_place_sockets(struct supervisor *s);
/* Unix listeners: a dup of each for a worker that starts. */
void scaling_give_unix(struct supervisor *s, struct worker *w);
void scaling_on_listen_back(struct supervisor *s, struct listener_sock *ls, int from);
/* A moving session (MSG_CONN_MOVE): forwarded to a running worker. */
void scaling_on_conn_move(struct supervisor *s, struct msg *m);
/* A worker's thread ended: its sockets are forgotten and anything still in
 * its inbox for it (sockets, sessions) goes elsewhere. */
void scaling_worker_gone(struct supervisor *s, int id);
