/*
 * The supervisor: the main thread. It owns the configuration, the signals,
 * systemd notification, the listening sockets' life cycle and the workers'
 * life cycle, and decides; workers carry decisions out through the bus.
 */
#pragma once

/* Runs the server until it is stopped; returns the process exit status. */
int supervisor_run(const char *config_path, int workers_override);

/* For the admin console, on the supervisor thread. */
#include "core/bus.h"

#include <stddef.h>
#include <stdint.h>

struct config;
struct supervisor;

struct sup_worker_view {
    int id;
    const char *state; /* "running", "draining", "stopped" (recently left) */
};

const struct config *sup_config(struct supervisor *s);
const char *sup_config_path(struct supervisor *s);
/* Fills out with up to max workers (live ones first, then the last
 * SUP_STOPPED_SHOWN that left); returns how many it filled. */
#define SUP_STOPPED_SHOWN 16
#define SUP_MAX_VIEWS (BUS_MAX_WORKERS + SUP_STOPPED_SHOWN)
int sup_workers(struct supervisor *s, struct sup_worker_view *out, int max);
/* Like SIGHUP; 0, or -1 with "FILE:LINE: message" in err. */
int sup_reload(struct supervisor *s, char *err, size_t errlen);
void sup_stop(struct supervisor *s, unsigned grace_ms);
/* 0, or -1 when a log file could not be reopened (logged). */
int sup_reopen_logs(struct supervisor *s);
void sup_each_listener(struct supervisor *s,
                       void (*fn)(void *arg, uint32_t id, const char *service, const char *text,
                                  int enabled),
                       void *arg);
/* Marks every listener whose address or service name is `which` (so new
 * sockets for it keep the state); returns how many matched. The caller
 * tells the workers. */
int sup_listener_enable(struct supervisor *s, const char *which, int enable);
/* Sends MSG_ADMIN (query, id, arg, a copy of text) to one live worker, or to
 * all with worker 0; returns how many were asked. */
int sup_ask_workers(struct supervisor *s, int worker, int query, uint64_t id, uint64_t arg,
                    const char *text);
void *sup_proto_state(struct supervisor *s, int proto);
/* Live scaling; each returns 0 with a summary in msg, or -1 with why. */
int sup_scale(struct supervisor *s, int n, char *msg, size_t len);
/* Drain one worker (restart: and start a fresh one that takes its place). */
int sup_drain(struct supervisor *s, int id, int restart, char *msg, size_t len);
