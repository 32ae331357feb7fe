/*
 * Inside the admin console: what console.c (sessions, authentication,
 * questions to workers) and commands.c (the command table) share.
 * Supervisor thread only.
 */
#pragma once

#include "core/listener.h"
#include "core/sbuf.h"

#include <stdint.h>

struct bufferevent;
struct event;
struct event_base;
struct supervisor;

enum level { L_NONE, L_OPERATOR, L_ADMIN };
extern const char *const admin_level_names[];

struct alistener {
    struct alistener *next;
    struct admin *a;
    int fd;
    int is_unix;
    struct listen_addr addr;
    struct event *ev;
};

struct session {
    struct session *prev, *next;
    struct admin *a;
    struct bufferevent *bev;
    enum level level;
    int is_tcp;
    int skipping; /* inside an over-long line */
    int closing;
    char challenge[65];
    char peer[LISTEN_TEXT_MAX];
    struct event *delay_ev;
    struct query *query; /* waiting for workers: no more lines are read */
};

/* A question to workers, answered when every one has replied (or after
 * QUERY_MS, with a note about the silent ones). */
#define QUERY_MS 3000
struct query {
    uint64_t id;
    int expected, got;
    uint64_t sum;
    int kind, json;
    char what[LISTEN_TEXT_MAX];
    struct sbuf sb;
    struct event *timeout;
    struct session *s;
};

struct admin {
    struct event_base *base;
    struct supervisor *sup;
    struct alistener *listeners;
    struct session *sessions;
    unsigned nsessions;
    unsigned max_sessions;
    char *secret, *operator_secret;
    unsigned long auth_failures;
    uint64_t next_query;
};

typedef void cmd_fn(struct session *s, int argc, char **argv);

struct command {
    const char *name;
    enum level level;
    const char *usage;
    const char *help;
    cmd_fn *fn;
};

/* commands.c */
extern const struct command admin_commands[];
/* The reply to a finished question to workers, from what they sent. */
int admin_query_format(const struct query *q, struct sbuf *out);

/* console.c */
void admin_reply(struct session *s, int status, const char *body, size_t len);
void admin_replyf(struct session *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends the buffer as the reply (500 if it ran out of memory), frees it. */
void admin_send_sb(struct session *s, int status, struct sbuf *sb);
void admin_close_after_write(struct session *s);
/* Asks one worker (or all, with worker 0); the reply goes out when they
 * have answered, formatted by admin_query_format. */
void admin_ask(struct session *s, int kind, int worker, uint64_t arg, const char *text,
               const char *what, int json);
int admin_worker_exists(struct session *s, int id);
