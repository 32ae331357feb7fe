/*
 * The supervisor: the main thread. It owns the configuration, the signals,
 * systemd notification, the listening sockets' and the workers' life
 * cycles, and decides; workers carry decisions out through the bus.
 *
 * The functions below are for supervisor-side modules (the admin console)
 * and run on the supervisor thread only.
 */
#pragma once

#include "core/bus.h"

#include <stddef.h>
#include <stdint.h>

struct config;
struct event_base;
struct module;
struct supervisor;

/* Runs the server until it is stopped; returns the process exit status.
 * The modules must be registered (core/module.h). */
int supervisor_run(const char *config_path, int workers_override);

struct sup_worker_view {
    int id;
    const char *state; /* "running", "draining", "stopped" (recently left) */
};

struct event_base *sup_base(struct supervisor *s);
const struct config *sup_config(struct supervisor *s);
const char *sup_config_path(struct supervisor *s);
void *sup_module_state(struct supervisor *s, const struct module *m);
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
/* An open listener, as the console shows it. */
struct sup_listener_view {
    uint32_t id;
    const char *service, *text;
    int enabled;
    /* Its listening sockets: TCP, one or more per running worker, held[id]
     * by worker id (and some on their way between workers); Unix, one
     * shared socket (held is NULL). */
    unsigned sockets;
    const uint16_t *held;
};
void sup_each_listener(struct supervisor *s,
                       void (*fn)(void *arg, const struct sup_listener_view *l), void *arg);
/* Marks every listener whose address or service name is `which` (so new
 * sockets for it keep the state); returns how many matched. The caller
 * tells the workers (worker_listeners_enable, on each worker). */
int sup_listener_enable(struct supervisor *s, const char *which, int enable);
/* Live scaling; each returns 0 with a summary in msg, or -1 with why. */
int sup_scale(struct supervisor *s, int n, char *msg, size_t len);
/* Drain one worker (restart: and start a fresh one that takes its place). */
int sup_drain(struct supervisor *s, int id, int restart, char *msg, size_t len);
