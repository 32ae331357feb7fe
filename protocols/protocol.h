/*
 * What a protocol gives the core. core/ never names a protocol: it walks
 * protocols_all (protocols/protocols.c), parses each protocol's top-level
 * configuration list with its parse callback, and hands accepted connections
 * and bus messages to it.
 *
 * Worker-side callbacks run on the worker that owns the connection; the
 * sup_* callbacks run on the supervisor thread.
 */
#pragma once

#include "core/queue.h"

#include <libconfig.h>
#include <stddef.h>

struct cfg_ctx;
struct conn;
struct sbuf;
struct worker;

struct protocol {
    const char *name;        /* top-level configuration list, e.g. "chat" */
    const char *const *keys; /* keys a service block takes besides name and listen */
    int tcp_nodelay;         /* interactive traffic: disable Nagle on accept */
    /* Clients speak first: TCP listeners use TCP_DEFER_ACCEPT, so accept
     * returns a connection with its first bytes already there. */
    int defer_accept;
    /* The protocol does its own socket I/O on c->fd: the core makes no
     * bufferevent (an idle connection then holds no buffers) and the
     * protocol counts bytes with conn_count_in/out. */
    int raw_io;

    /* Parse one service block into *pcfg (the protocol's own struct). */
    int (*parse)(struct cfg_ctx *ctx, const config_setting_t *block, void **pcfg);
    void (*free_cfg)(void *pcfg);

    /* Per-worker state, made when the worker starts, freed when it ends. */
    void *(*worker_start)(struct worker *w);
    void (*worker_stop)(void *state);
    /* A new connection for this protocol; c->bev is ready, reading off
     * (or, with raw_io, c->fd is non-blocking and nothing watches it). */
    void (*accept)(void *state, struct conn *c);
    /* The connection is being closed (by anyone): release c->proto_ctx. */
    void (*closed)(void *state, struct conn *c);
    /* A graceful stop began; grace_ms is how long the session has left. */
    void (*stopping)(void *state, struct conn *c, unsigned grace_ms);
    /* What the connection is doing, in a few words, for the console's
     * 'conns' (an HTTP request line, a chat nick). May be NULL. */
    void (*describe)(void *state, struct conn *c, char *buf, size_t len);
    /* A MSG_PROTO message for this protocol; the callee owns it. */
    void (*message)(void *state, struct msg *m);

    /* Supervisor side; any may be NULL. */
    void *(*sup_start)(void);
    void (*sup_stop)(void *state);
    void (*sup_message)(void *state, struct msg *m);
    /* SIGUSR1 on the supervisor: reopen the service's own log files (by
     * dup2 onto the same descriptor, so workers never see it closed). */
    int (*reopen)(void *pcfg);
    /* The console's "<name> ..." commands (e.g. "chat who"), on the
     * supervisor: argv[0] is the protocol name; the reply body goes to out;
     * returns the reply status. May be NULL. */
    int (*sup_admin)(void *state, int argc, char **argv, struct sbuf *out);
};

/* NULL-terminated; the index of a protocol here is its msg.proto. */
extern const struct protocol *const protocols_all[];
int protocol_index(const struct protocol *p);
