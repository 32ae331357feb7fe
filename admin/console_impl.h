/*
 * Inside the admin console: what its files share.
 *   admin.c     the module: configuration section, per-worker answers
 *   console.c   listeners, sessions, authentication, dispatching commands
 *   commands.c  the console's own commands
 * Supervisor thread only, except where a comment says "worker".
 */
#pragma once

struct tls_service;

#include "core/list.h"
#include "core/listener.h"
#include "core/module.h"
#include "core/sbuf.h"

#include <stdint.h>

struct bufferevent;
struct config;
struct event;
struct event_base;
struct supervisor;
struct worker;

/* The configuration section: admin = { listen; secret; operator_secret;
 * max_sessions; } */
struct admin_config {
    struct listen_addr *listen;
    size_t nlisten;
    char *secret_path, *operator_secret_path;
    char *secret, *operator_secret; /* contents; NULL when not configured */
    unsigned max_sessions;
    unsigned max_conns_per_ip; /* TCP sessions per client address; 0: no cap */
    struct tls_service *tls;   /* for tls_listen addresses (listen[i].tls) */
};

/* Messages between the console and the workers (msg.module is the
 * console's module id). */
enum admin_msg {
    ADMIN_Q_CONNS = 1,    /* to worker: ptr = service name filter or NULL; b = 1 for JSON lines */
    ADMIN_Q_KILL,         /* to worker: b = connection id; reply b: 1 if it was there */
    ADMIN_Q_LISTENER_OFF, /* to worker: ptr = an address or a service name; reply b: sockets */
    ADMIN_Q_LISTENER_ON,
    ADMIN_REPLY, /* to supervisor: a = query id, b = a number, ptr = text or NULL */
};

extern const char *const admin_level_names[]; /* by enum module_level */

struct admin_listener {
    struct admin_listener *next;
    struct admin *a;
    int fd;
    int is_unix;
    struct listen_addr addr;
    struct event *ev;
    struct event *resume_ev; /* accepting again after running out of descriptors */
};

struct admin_session {
    struct list node; /* the console's sessions */
    struct admin *a;
    struct bufferevent *bev;
    enum module_level level; /* MODULE_ANYONE until authenticated */
    int is_tcp;
    int tls_handshaking; /* a TLS listener's session before its handshake ends */
    struct config *cfg;  /* meanwhile, the snapshot of its certificate (a reference) */
    int skipping;        /* inside an over-long line */
    int closing;
    char challenge[65];
    char peer[LISTEN_TEXT_MAX];
    struct event *delay_ev;
    struct event *auth_ev;     /* TCP: the deadline to authenticate (AUTH_S from connecting) */
    struct admin_query *query; /* waiting for workers: no more lines are read */
    int ip_slot;               /* counted against max_conns_per_ip, or -1 */
};

/* A question to workers, answered when every one has replied (or after
 * ADMIN_QUERY_MS, with a note about the silent ones). */
#define ADMIN_QUERY_MS 3000
struct admin_query {
    uint64_t id;
    int expected, got;
    uint64_t sum;
    int kind, json;
    char what[LISTEN_TEXT_MAX];
    struct sbuf sb;
    struct event *timeout;
    struct admin_session *s;
};

struct admin {
    struct event_base *base;
    struct supervisor *sup;
    struct admin_listener *listeners;
    struct list sessions;     /* struct admin_session */
    unsigned nsessions;       /* every session, authenticating ones included */
    unsigned nauthenticating; /* TCP sessions that have not authenticated yet */
    unsigned max_sessions, max_conns_per_ip;
    char *secret, *operator_secret;
    const struct tls_service *tls; /* the running configuration's, for new sessions */
    unsigned long auth_failures;
    uint64_t next_query;
};

/* A command of the console itself; modules' commands are struct
 * module_command (core/module.h). */
typedef void admin_cmd_fn(struct admin_session *s, int argc, char **argv);
struct admin_command {
    const char *name;
    enum module_level level;
    const char *usage;
    const char *help;
    admin_cmd_fn *fn;
};

/* commands.c */
extern const struct admin_command admin_commands[];
/* The reply to a finished question to workers, from what they sent. */
int admin_query_format(const struct admin_query *q, struct sbuf *out);

/* console.c */
int admin_console_start(struct supervisor *sup, const struct config *cfg, void **state, char *err,
                        size_t errlen);
void admin_console_reconfigure(void *state, const struct config *cfg);
void admin_console_stop(void *state);
void admin_console_message(void *state, struct msg *m);
void admin_reply(struct admin_session *s, int status, const char *body, size_t len);
void admin_replyf(struct admin_session *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends the buffer as the reply (500 if it ran out of memory), frees it. */
void admin_send_sb(struct admin_session *s, int status, struct sbuf *sb);
void admin_close_after_write(struct admin_session *s);
/* Asks one worker (or all, with worker 0); the reply goes out when they
 * have answered, formatted by admin_query_format. */
void admin_ask(struct admin_session *s, int kind, int worker, uint64_t arg, const char *text,
               const char *what, int json);
int admin_worker_exists(struct admin_session *s, int id);
/* 'help': the console's commands and every module's. */
void admin_help(struct admin_session *s);

/* admin.c (worker): answers one question from the console. */
void admin_worker_answer(struct worker *w, struct msg *m);
