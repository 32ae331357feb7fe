/*
 * The module interface: what a protocol (http, chat, echo, ...) or a
 * supervisor-side service (the admin console) gives the core. The core
 * never names a module; main.c hands it the list (modules_register), and
 * from then on the core walks that list: it parses each module's
 * configuration, starts its per-worker and supervisor state, hands it
 * accepted connections and the bus messages addressed to it, and asks it
 * for figures and console commands.
 *
 * Every hook is optional unless its comment says otherwise. Which thread
 * calls a hook is part of its contract:
 *   - configuration hooks: the supervisor (or main, for -t), while a new
 *     snapshot is built; nothing else runs on that snapshot yet;
 *   - worker hooks: the worker that owns the connection or the state;
 *   - supervisor hooks: the supervisor thread;
 *   - stats: any thread, so it may read only immutable configuration and
 *     single-writer counters (core/stats.h).
 *
 * A module's messages (core/bus.h) carry its id (module_id) in msg.module
 * and a type of its own choosing in msg.type; the core delivers them to
 * message() on a worker or sup_message() on the supervisor, which own them
 * (msg_release when done).
 *
 * docs/writing-a-protocol.md walks through a whole module, protocols/echo.
 */
#pragma once

#include "core/queue.h"

#include <libconfig.h>
#include <stddef.h>

struct cfg_ctx;
struct config;
struct conn;
struct sbuf;
struct supervisor;
struct worker;

/* Who may run a console command. */
enum module_level { MODULE_ANYONE, MODULE_OPERATOR, MODULE_ADMIN };

struct module_command {
    const char *name; /* its words, e.g. "chat who"; the console matches them */
    enum module_level level;
    const char *usage; /* e.g. "chat say MESSAGE" */
    const char *help;  /* a few words for 'help' */
    /* Supervisor thread. argv[0..] are all the words typed (the command's
     * own first); writes the reply body to out and returns its status
     * (200, 400 or 500). */
    int (*run)(void *sup_state, int argc, char **argv, struct sbuf *out);
};

/* PROM: Prometheus text exposition, whole families (HELP and TYPE once, then
 * every sample), names medusa_<module>_...; counters end in _total. */
enum module_stats_format { MODULE_STATS_TEXT, MODULE_STATS_JSON, MODULE_STATS_PROM };

/* flags */
#define MODULE_TCP_NODELAY 0x1u /* interactive: disable Nagle on accept */
/* Clients speak first: TCP listeners use TCP_DEFER_ACCEPT, so accept
 * returns a connection whose first bytes are already there. */
#define MODULE_DEFER_ACCEPT 0x2u
/* The module does its own socket I/O on c->fd: the core makes no
 * bufferevent (an idle connection then holds no buffers) and the module
 * counts bytes with conn_count_in/out. */
#define MODULE_RAW_IO 0x4u
/* The protocol upgrades to TLS itself (FTP's AUTH TLS): a `tls` block is
 * meaningful on its plain `listen` ports too, not only with tls_listen. */
#define MODULE_STARTTLS 0x8u

struct module {
    const char *name; /* its configuration key, e.g. "chat"; required */
    unsigned flags;
    /* The protocols it offers in TLS's ALPN, in wire form ("\x08http/1.1"),
     * or NULL. */
    const char *alpn;
    /* What a plain connection refused at accept (the service's
     * max_conns_per_ip) is told before it is closed, or NULL: nothing. */
    const char *busy_reply;

    /* ---- configuration ----
     * A service module has a top-level list of service blocks,
     * name = ( { name = "x"; listen = [ ... ]; ... } ); the core parses
     * name and listen, checks keys against `keys`, and parse() reads the
     * rest into the module's own struct. Errors: cfg_error (file:line). */
    const char *const *keys; /* a service block's keys besides name and listen */
    int (*parse)(struct cfg_ctx *ctx, const config_setting_t *block, void **pcfg);
    void (*free_cfg)(void *pcfg);
    /* A module with a top-level group of its own (admin = { ... }):
     * called after every service is parsed, with group NULL when the file
     * has none, so the module can default or check against services. */
    int (*parse_section)(struct cfg_ctx *ctx, const config_setting_t *group, const struct config *c,
                         void **section);
    /* The section's top-level key when it is not the module's name (HTTP's
     * upstreams = ( ... ), beside its service list http = ( ... )). The
     * section may be a group or a list; parse_section checks which. */
    const char *section;
    void (*free_section)(void *section);

    /* ---- worker thread ---- */
    /* Per-worker state, made when the worker starts; NULL is an error. */
    void *(*worker_init)(struct worker *w);
    /* The worker ends: every connection is already closed or moved. */
    void (*worker_dispose)(void *state);
    /* The worker now serves a new snapshot (reload); connections accepted
     * earlier keep theirs (c->cfg) until they close. */
    void (*worker_config)(void *state, struct config *cfg);
    /* A new connection (required for service modules). c->bev is ready
     * with reading off, or with MODULE_RAW_IO, c->fd is non-blocking and
     * nothing watches it. On a tls_listen port the TLS handshake is
     * already done: c->ssl is set, and MODULE_RAW_IO modules use
     * conn_read/conn_write (which also serve plain connections). */
    void (*accept)(void *state, struct conn *c);
    /* The connection is being closed, by anyone: release c->ctx. */
    void (*closed)(void *state, struct conn *c);
    /* The worker is leaving. move: it leaves because the server scales
     * down; a module with adopt() moves the session to another worker with
     * conn_move() (now, or as soon as the session is between two
     * exchanges), and any other finishes within grace_ms and tells its
     * client the truth. !move: the whole server stops, or (w->leaving) the
     * session cannot move (a TLS bufferevent, conn_movable): tell the
     * client which and finish within grace_ms. Either way the core closes what is left when
     * grace_ms ends. */
    void (*drain)(void *state, struct conn *c, unsigned grace_ms, int move);
    /* A session moved here from another worker: c is set up as accept()'s
     * (with a bufferevent holding the session's unread input and unsent
     * output, unless MODULE_RAW_IO); blob is what the sending worker gave
     * conn_move(), now owned by this hook. */
    void (*adopt)(void *state, struct conn *c, void *blob);
    /* What the connection is doing, in a few words, for the console's
     * 'conns' (an HTTP request line, a chat nick). */
    void (*describe)(void *state, struct conn *c, char *buf, size_t len);
    /* A bus message addressed to this module, on a worker. */
    void (*message)(void *state, struct msg *m);

    /* ---- supervisor thread ---- */
    /* After the workers have started and the listeners are open. Returns
     * 0, or -1 with err (the server then stops). */
    int (*sup_init)(struct supervisor *s, const struct config *cfg, void **state, char *err,
                    size_t errlen);
    /* A reload: cfg is the new snapshot, already sent to the workers. */
    void (*sup_config)(void *state, const struct config *cfg);
    void (*sup_dispose)(void *state);
    void (*sup_message)(void *state, struct msg *m);
    /* SIGUSR1: reopen a service's own log files (by dup2 onto the same
     * descriptor, so workers never see it closed). 0, or -1 (logged). */
    int (*reopen)(void *pcfg);

    /* ---- any thread ---- */
    /* The module's figures for the running configuration: with JSON, one
     * JSON value (an object); with TEXT, lines for people. */
    void (*stats)(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb);

    /* Console commands, ending with an entry whose name is NULL. */
    const struct module_command *commands;
};

/* The registry. main() registers the NULL-terminated list once, before any
 * other core call; afterwards any thread may read it. Ids are 1..count
 * (0 is the core itself on the bus). */
void modules_register(const struct module *const *list);
unsigned module_count(void);
const struct module *module_at(unsigned id);
unsigned module_id(const struct module *m); /* 0 when not registered */
