/*
 * The admin console; see console.h.
 *
 * Sessions are bufferevents on the supervisor's loop. A line is read,
 * split into words and looked up in the command table, which says the level
 * a command needs (operator: every read-only command; admin: everything).
 * A reply is always one "STATUS LENGTH\n" frame. Bad input (an over-long
 * line, control bytes, an unknown command, wrong arguments) gets a 400 and
 * the session goes on; an over-long line is skipped to its end.
 *
 * Authentication (TCP). The challenge is 32 random bytes in hex; the
 * answer is compared, in constant time, with the HMAC of each configured
 * secret. A wrong answer is counted and logged, and answered after a
 * delay, then the session is closed; a new session gets a new challenge,
 * so a replayed answer fails.
 */
#include "admin/console.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/supervisor.h"
#include "protocols/protocol.h"
#include "protocols/http/http.h"
#include "core/sbuf.h"
#include "version.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 8192
#define MAX_WORDS 16
#define FAIL_DELAY_MS 1000
#define AUTH_S 10  /* seconds a TCP session has to authenticate */
#define IDLE_S 600 /* seconds an idle session is kept */

enum level { L_NONE, L_OPERATOR, L_ADMIN };
static const char *const level_names[] = {"none", "operator", "admin"};

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

/* ---- replies ---- */

static void reply(struct session *s, int status, const char *body, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out, "%d %zu\n", status, len);
    evbuffer_add(out, body, len);
}

static void replyf(struct session *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void replyf(struct session *s, int status, const char *fmt, ...)
{
    struct sbuf sb = {0};
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        reply(s, 500, "out of memory\n", 14);
        return;
    }
    sb_add(&sb, text, (size_t)n);
    free(text);
    reply(s, status, sb.p ? sb.p : "", sb.len);
    sb_free(&sb);
}

static void session_free(struct session *s)
{
    struct admin *a = s->a;
    if (s->prev)
        s->prev->next = s->next;
    else
        a->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    a->nsessions--;
    if (s->query) {
        event_free(s->query->timeout);
        sb_free(&s->query->sb);
        free(s->query);
    }
    if (s->delay_ev)
        event_free(s->delay_ev);
    bufferevent_free(s->bev);
    free(s);
}

static void close_after_write(struct session *s)
{
    s->closing = 1;
    bufferevent_disable(s->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
        session_free(s);
}

/* ---- commands ---- */

struct command;
typedef void cmd_fn(struct session *s, int argc, char **argv);

struct command {
    const char *name;
    enum level level;
    const char *usage;
    const char *help;
    cmd_fn *fn;
};

static int is_json(int *argc, char **argv)
{
    if (*argc > 1 && strcmp(argv[*argc - 1], "json") == 0) {
        (*argc)--;
        return 1;
    }
    return 0;
}

static void json_str(struct sbuf *sb, const char *s)
{
    sb_adds(sb, "\"");
    sb_add_json(sb, s);
    sb_adds(sb, "\"");
}

static void send_sb(struct session *s, int status, struct sbuf *sb)
{
    if (sb->failed)
        reply(s, 500, "out of memory\n", 14);
    else
        reply(s, status, sb->p ? sb->p : "", sb->len);
    sb_free(sb);
}

static const struct command commands[];

static void cmd_help(struct session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct sbuf sb = {0};
    sb_adds(&sb, "commands (level; listing commands take a trailing 'json'):\n");
    for (const struct command *c = commands; c->name; c++)
        sb_addf(&sb, "  %-34s %-8s %s\n", c->usage, level_names[c->level], c->help);
    send_sb(s, 200, &sb);
}

struct totals {
    uint64_t accepted, active, closed, bytes_in, bytes_out, errors, requests;
};

static void add_totals(struct totals *t, int id)
{
    struct worker_stats *w = stats_slot(id);
    t->accepted += stat_get(&w->accepted);
    t->active += stat_get(&w->active);
    t->closed += stat_get(&w->closed);
    t->bytes_in += stat_get(&w->bytes_in);
    t->bytes_out += stat_get(&w->bytes_out);
    t->errors += stat_get(&w->errors);
    t->requests += stat_get(&w->requests);
}

static void cmd_info(struct session *s, int argc, char **argv)
{
    int json = is_json(&argc, argv);
    struct sup_worker_view v[BUS_MAX_WORKERS];
    int n = sup_workers(s->a->sup, v, BUS_MAX_WORKERS);
    struct totals t = {0};
    for (int i = 0; i < n; i++)
        add_totals(&t, v[i].id);
    long long uptime = (long long)time(NULL) - stats_started();
    struct sbuf sb = {0};
    if (json) {
        sb_addf(&sb, "{\"version\":\"%s\",\"pid\":%d,\"uptime_seconds\":%lld,\"config\":",
                MEDUSA_VERSION, (int)getpid(), uptime);
        json_str(&sb, sup_config_path(s->a->sup));
        sb_addf(&sb,
                ",\"workers\":%d,\"connections_accepted\":%llu,\"connections_active\":%llu,"
                "\"requests\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,\"errors\":%llu}\n",
                n, (unsigned long long)t.accepted, (unsigned long long)t.active,
                (unsigned long long)t.requests, (unsigned long long)t.bytes_in,
                (unsigned long long)t.bytes_out, (unsigned long long)t.errors);
    } else {
        sb_addf(&sb,
                "version      %s\npid          %d\nuptime       %lld s\nconfig       %s\n"
                "workers      %d\naccepted     %llu\nactive       %llu\nrequests     %llu\n"
                "bytes in     %llu\nbytes out    %llu\nerrors       %llu\n",
                MEDUSA_VERSION, (int)getpid(), uptime, sup_config_path(s->a->sup), n,
                (unsigned long long)t.accepted, (unsigned long long)t.active,
                (unsigned long long)t.requests, (unsigned long long)t.bytes_in,
                (unsigned long long)t.bytes_out, (unsigned long long)t.errors);
    }
    send_sb(s, 200, &sb);
}

static void cmd_workers(struct session *s, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "set") == 0) {
        char *end = NULL;
        long n = argc == 3 ? strtol(argv[2], &end, 10) : 0;
        if (argc != 3 || *end || n < 1 || n > BUS_MAX_WORKERS) {
            replyf(s, 400, "usage: workers set N  (1 to %d)\n", BUS_MAX_WORKERS);
            return;
        }
        if (s->level < L_ADMIN) {
            replyf(s, 401, "'workers set' needs level admin; this session is operator\n");
            return;
        }
        char msg[256];
        log_warn(s->peer, "workers set %ld from the console", n);
        if (sup_scale(s->a->sup, (int)n, msg, sizeof msg) < 0)
            replyf(s, 500, "%s\n", msg);
        else
            replyf(s, 200, "%s", msg);
        return;
    }
    int json = is_json(&argc, argv);
    if (argc > 1) {
        replyf(s, 400, "usage: workers [json] | workers set N\n");
        return;
    }
    struct sup_worker_view v[BUS_MAX_WORKERS];
    int n = sup_workers(s->a->sup, v, BUS_MAX_WORKERS);
    struct sbuf sb = {0};
    if (json)
        sb_adds(&sb, "[");
    else
        sb_addf(&sb, "%-6s %-9s %8s %10s %10s %14s %14s %6s %8s\n", "id", "state", "active",
                "accepted", "requests", "bytes_in", "bytes_out", "inbox", "lag_ms");
    for (int i = 0; i < n; i++) {
        struct worker_stats *w = stats_slot(v[i].id);
        unsigned long long act = stat_get(&w->active), acc = stat_get(&w->accepted),
                           req = stat_get(&w->requests), bin = stat_get(&w->bytes_in),
                           bout = stat_get(&w->bytes_out), clo = stat_get(&w->closed);
        double lag = (double)stat_get(&w->lag_us) / 1000.0;
        size_t inbox = bus_inbox_depth(v[i].id);
        if (json)
            sb_addf(&sb,
                    "%s{\"id\":%d,\"state\":\"%s\",\"active\":%llu,\"accepted\":%llu,"
                    "\"closed\":%llu,\"requests\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                    "\"inbox\":%zu,\"lag_ms\":%.1f}",
                    i ? "," : "", v[i].id, v[i].state, act, acc, clo, req, bin, bout, inbox, lag);
        else
            sb_addf(&sb, "%-6d %-9s %8llu %10llu %10llu %14llu %14llu %6zu %8.1f\n", v[i].id,
                    v[i].state, act, acc, req, bin, bout, inbox, lag);
    }
    if (json)
        sb_adds(&sb, "]\n");
    send_sb(s, 200, &sb);
}

struct listing {
    struct sbuf sb;
    int json, count;
};

static void list_one(void *arg, uint32_t id, const char *service, const char *text, int enabled)
{
    struct listing *l = arg;
    if (l->json) {
        sb_addf(&l->sb, "%s{\"id\":%u,\"service\":", l->count ? "," : "", id);
        json_str(&l->sb, service);
        sb_adds(&l->sb, ",\"address\":");
        json_str(&l->sb, text);
        sb_addf(&l->sb, ",\"state\":\"%s\"}", enabled ? "enabled" : "disabled");
    } else {
        sb_addf(&l->sb, "%-6u %-16s %-9s %s\n", id, service, enabled ? "enabled" : "disabled",
                text);
    }
    l->count++;
}

static void cmd_worker(struct session *s, int argc, char **argv)
{
    int restart = argc == 3 && strcmp(argv[1], "restart") == 0;
    char *end = NULL;
    long id = argc == 3 ? strtol(argv[2], &end, 10) : 0;
    if (argc != 3 || (!restart && strcmp(argv[1], "drain") != 0) || *end || id < 1) {
        replyf(s, 400, "usage: worker drain ID | worker restart ID\n");
        return;
    }
    char msg[256];
    log_warn(s->peer, "worker %s %ld from the console", argv[1], id);
    if (sup_drain(s->a->sup, (int)id, restart, msg, sizeof msg) < 0)
        replyf(s, 400, "%s\n", msg);
    else
        replyf(s, 200, "%s", msg);
}

static void cmd_listeners(struct session *s, int argc, char **argv)
{
    struct listing l = {.json = is_json(&argc, argv)};
    if (argc > 1) {
        replyf(s, 400, "usage: listeners [json]\n");
        return;
    }
    if (l.json)
        sb_adds(&l.sb, "[");
    else
        sb_addf(&l.sb, "%-6s %-16s %-9s %s\n", "id", "service", "state", "address");
    sup_each_listener(s->a->sup, list_one, &l);
    if (l.json)
        sb_adds(&l.sb, "]\n");
    send_sb(s, 200, &l.sb);
}

static void cmd_stats(struct session *s, int argc, char **argv)
{
    (void)argv;
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "json") != 0)) {
        replyf(s, 400, "usage: stats [json]  (always JSON)\n");
        return;
    }
    struct sbuf sb = {0};
    http_status_json(sup_config(s->a->sup), &sb);
    send_sb(s, 200, &sb);
}

static void cmd_reload(struct session *s, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        replyf(s, 400, "usage: reload\n");
        return;
    }
    char err[CONFIG_ERR_MAX];
    if (sup_reload(s->a->sup, err, sizeof err) < 0)
        replyf(s, 500, "reload failed: %s\nthe old configuration is still active\n", err);
    else
        replyf(s, 200, "configuration reloaded\n");
}

static void cmd_config(struct session *s, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        replyf(s, 400, "usage: config\n");
        return;
    }
    const struct config *c = sup_config(s->a->sup);
    struct sbuf sb = {0};
    sb_addf(&sb, "# %s (as loaded; secrets are in their own files and not shown)\n", c->path);
    sb_adds(&sb, c->text ? c->text : "");
    if (sb.len && sb.p[sb.len - 1] != '\n')
        sb_adds(&sb, "\n");
    send_sb(s, 200, &sb);
}

static void tail_line(void *arg, const char *line)
{
    sb_adds(arg, line);
    sb_adds(arg, "\n");
}

static void cmd_log(struct session *s, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "tail") == 0 && argc <= 3) {
        long n = 20;
        if (argc == 3) {
            char *end;
            n = strtol(argv[2], &end, 10);
            if (*end || n < 1 || n > 256) {
                replyf(s, 400, "usage: log tail [N]  (N from 1 to 256)\n");
                return;
            }
        }
        struct sbuf sb = {0};
        log_tail((size_t)n, tail_line, &sb);
        send_sb(s, 200, &sb);
        return;
    }
    if (s->level < L_ADMIN && argc >= 2) {
        replyf(s, 401, "'log %s' needs level admin; this session is operator\n", argv[1]);
        return;
    }
    if (argc == 3 && strcmp(argv[1], "level") == 0) {
        int lv = log_level_parse(argv[2]);
        if (lv < 0) {
            replyf(s, 400, "log level: one of error, warn, info, debug\n");
            return;
        }
        log_set_level((enum log_level)lv);
        log_warn(s->peer, "log level set to %s from the console", argv[2]);
        replyf(s, 200, "log level is %s\n", argv[2]);
        return;
    }
    if (argc == 2 && strcmp(argv[1], "reopen") == 0) {
        if (sup_reopen_logs(s->a->sup) < 0)
            replyf(s, 500, "a log file could not be reopened; see the error log\n");
        else
            replyf(s, 200, "log files reopened\n");
        return;
    }
    replyf(s, 400, "usage: log level LEVEL | log reopen | log tail [N]\n");
}

/* ---- questions to workers ---- */

static void read_cb(struct bufferevent *bev, void *arg);

static void query_finish(struct query *q)
{
    struct session *s = q->s;
    s->query = NULL;
    event_free(q->timeout);
    int missing = q->expected - q->got;
    struct sbuf out = {0};
    int status = 200;
    switch (q->kind) {
    case ADMIN_CONNS:
        if (q->json) {
            /* workers send one object per line: join them into an array */
            sb_adds(&out, "[");
            int first = 1;
            for (char *line = q->sb.p, *nl; line && *line; line = nl + 1) {
                nl = strchr(line, '\n');
                if (!nl)
                    break;
                if (!first)
                    sb_adds(&out, ",");
                sb_add(&out, line, (size_t)(nl - line));
                first = 0;
            }
            sb_adds(&out, "]\n");
        } else {
            sb_addf(&out, "%-20s %-6s %-12s %-24s %6s %6s %10s %10s %s\n", "id", "worker",
                    "service", "peer", "age_s", "idle_s", "bytes_in", "bytes_out", "state");
            sb_add(&out, q->sb.p ? q->sb.p : "", q->sb.len);
        }
        break;
    case ADMIN_KILL:
        if (q->sum)
            sb_addf(&out, "connection %s closed\n", q->what);
        else {
            status = 400;
            sb_addf(&out, "no connection %s\n", q->what);
        }
        break;
    case ADMIN_LISTENER_OFF:
    case ADMIN_LISTENER_ON:
        sb_addf(&out, "%s %s on %llu worker socket%s\n", q->what,
                q->kind == ADMIN_LISTENER_OFF ? "disabled: no new connections, existing ones go on"
                                              : "enabled",
                (unsigned long long)q->sum, q->sum == 1 ? "" : "s");
        break;
    }
    if (missing > 0) {
        status = 500;
        sb_addf(&out, "(%d worker%s did not answer within %d ms)\n", missing,
                missing == 1 ? "" : "s", QUERY_MS);
    }
    sb_free(&q->sb);
    free(q);
    send_sb(s, status, &out);
    bufferevent_enable(s->bev, EV_READ);
    read_cb(s->bev, s); /* lines that arrived meanwhile */
}

static void query_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    query_finish(arg);
}

void admin_message(struct admin *a, struct msg *m)
{
    for (struct session *s = a->sessions; s; s = s->next) {
        struct query *q = s->query;
        if (!q || q->id != m->a)
            continue;
        if (m->ptr)
            sb_adds(&q->sb, m->ptr);
        q->sum += m->b;
        if (++q->got == q->expected)
            query_finish(q);
        break;
    }
    msg_release(m);
}

/* Asks workers (one, or all with worker 0); the reply goes out when they
 * have answered. */
static void ask(struct session *s, int kind, int worker, uint64_t arg, const char *text,
                const char *what, int json)
{
    struct admin *a = s->a;
    struct query *q = calloc(1, sizeof *q);
    if (!q || !(q->timeout = evtimer_new(a->base, query_timeout, q))) {
        free(q);
        reply(s, 500, "out of memory\n", 14);
        return;
    }
    q->id = ++a->next_query;
    q->kind = kind;
    q->json = json;
    q->s = s;
    snprintf(q->what, sizeof q->what, "%s", what ? what : "");
    s->query = q;
    bufferevent_disable(s->bev, EV_READ);
    q->expected = sup_ask_workers(a->sup, worker, kind, q->id, arg, text);
    if (q->expected == 0) {
        query_finish(q);
        return;
    }
    struct timeval tv = {QUERY_MS / 1000, (QUERY_MS % 1000) * 1000};
    evtimer_add(q->timeout, &tv);
}

static int worker_exists(struct session *s, int id)
{
    struct sup_worker_view v[BUS_MAX_WORKERS];
    int n = sup_workers(s->a->sup, v, BUS_MAX_WORKERS);
    for (int i = 0; i < n; i++)
        if (v[i].id == id)
            return 1;
    return 0;
}

static void cmd_conns(struct session *s, int argc, char **argv)
{
    int json = is_json(&argc, argv);
    int worker = 0;
    const char *service = NULL;
    for (int i = 1; i < argc; i++) {
        char *end;
        long n = strtol(argv[i], &end, 10);
        if (!*end && !worker && n > 0) {
            if (!worker_exists(s, (int)n)) {
                replyf(s, 400, "no worker %ld\n", n);
                return;
            }
            worker = (int)n;
        } else if (!service && *end) {
            service = argv[i];
        } else {
            replyf(s, 400, "usage: conns [WORKER] [SERVICE] [json]\n");
            return;
        }
    }
    ask(s, ADMIN_CONNS, worker, (uint64_t)json, service, NULL, json);
}

static void cmd_kill(struct session *s, int argc, char **argv)
{
    char *end = NULL;
    unsigned long long id = argc == 2 ? strtoull(argv[1], &end, 10) : 0;
    if (argc != 2 || *end || !id) {
        replyf(s, 400, "usage: kill CONNECTION_ID  (ids from 'conns')\n");
        return;
    }
    int worker = (int)(id >> 48);
    if (!worker_exists(s, worker)) {
        replyf(s, 400, "no connection %llu\n", id);
        return;
    }
    log_warn(s->peer, "kill connection %llu from the console", id);
    ask(s, ADMIN_KILL, worker, id, NULL, argv[1], 0);
}

static void cmd_listener(struct session *s, int argc, char **argv)
{
    int on = argc == 3 && strcmp(argv[1], "enable") == 0;
    if (argc != 3 || (!on && strcmp(argv[1], "disable") != 0)) {
        replyf(s, 400, "usage: listener disable|enable ADDRESS|SERVICE\n");
        return;
    }
    uint32_t ids[64];
    int n = sup_listener_enable(s->a->sup, argv[2], on, ids, 64);
    if (n == 0) {
        replyf(s, 400, "no listener or service '%.64s'; see 'listeners'\n", argv[2]);
        return;
    }
    log_warn(s->peer, "listener %s %s from the console", argv[2], on ? "enabled" : "disabled");
    /* One question per listener id; ask() handles one at a time, so a
     * service with several listeners is told in one go per id here. */
    for (int i = 1; i < n && i < 64; i++)
        sup_ask_workers(s->a->sup, 0, on ? ADMIN_LISTENER_ON : ADMIN_LISTENER_OFF, 0, ids[i], NULL);
    ask(s, on ? ADMIN_LISTENER_ON : ADMIN_LISTENER_OFF, 0, ids[0], NULL, argv[2], 0);
}

static void cmd_proto(struct session *s, int argc, char **argv)
{
    for (int i = 0; protocols_all[i]; i++) {
        const struct protocol *p = protocols_all[i];
        if (strcmp(p->name, argv[0]) != 0 || !p->sup_admin)
            continue;
        if (argc > 1 && strcmp(argv[1], "say") == 0 && s->level < L_ADMIN) {
            replyf(s, 401, "'%s say' needs level admin; this session is %s\n", argv[0],
                   level_names[s->level]);
            return;
        }
        struct sbuf sb = {0};
        int st = p->sup_admin(sup_proto_state(s->a->sup, i), argc, argv, &sb);
        if (st == 200 && argc > 1 && strcmp(argv[1], "say") == 0)
            log_warn(s->peer, "chat notice from the console");
        send_sb(s, st, &sb);
        return;
    }
    replyf(s, 400, "unknown command '%.64s'; try 'help'\n", argv[0]);
}

static void cmd_shutdown(struct session *s, int argc, char **argv)
{
    int now = argc == 2 && strcmp(argv[1], "now") == 0;
    if (argc > 2 || (argc == 2 && !now && strcmp(argv[1], "graceful") != 0)) {
        replyf(s, 400, "usage: shutdown [graceful|now]\n");
        return;
    }
    unsigned grace = now ? 0 : sup_config(s->a->sup)->grace_ms;
    replyf(s, 200, "shutting down (%s)\n", now ? "now" : "graceful");
    log_warn(s->peer, "shutdown (%s) from the console", now ? "now" : "graceful");
    sup_stop(s->a->sup, grace);
}

static void cmd_quit(struct session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    replyf(s, 200, "bye\n");
    close_after_write(s);
}

static const struct command commands[] = {
    {"help", L_OPERATOR, "help", "this list", cmd_help},
    {"info", L_OPERATOR, "info [json]", "version, pid, uptime, config, totals", cmd_info},
    {"workers", L_OPERATOR, "workers [json] | workers set N",
     "per worker state and counters; scale live (set: admin)", cmd_workers},
    {"worker", L_ADMIN, "worker drain ID | worker restart ID",
     "stop one taking connections, finish its sessions", cmd_worker},
    {"listeners", L_OPERATOR, "listeners [json]", "open listeners", cmd_listeners},
    {"stats", L_OPERATOR, "stats", "every counter as JSON (as /status.json)", cmd_stats},
    {"config", L_OPERATOR, "config", "the active configuration", cmd_config},
    {"log", L_OPERATOR, "log tail [N] | level L | reopen", "recent lines (level, reopen: admin)",
     cmd_log},
    {"conns", L_OPERATOR, "conns [WORKER] [SERVICE] [json]", "open connections", cmd_conns},
    {"kill", L_ADMIN, "kill ID", "close one connection", cmd_kill},
    {"listener", L_ADMIN, "listener disable|enable ADDR|NAME",
     "stop/resume accepting (connections kept)", cmd_listener},
    {"chat", L_OPERATOR, "chat who | chat say MESSAGE", "the room (say: admin)", cmd_proto},
    {"reload", L_ADMIN, "reload", "reload the configuration; says the outcome", cmd_reload},
    {"shutdown", L_ADMIN, "shutdown [graceful|now]", "stop the server", cmd_shutdown},
    {"quit", L_NONE, "quit", "end this session", cmd_quit},
    {NULL, 0, NULL, NULL, NULL},
};

/* ---- authentication ---- */

static int hmac_matches(const char *secret, const char *challenge, const char *answer)
{
    if (!secret)
        return 0;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)challenge,
         strlen(challenge), mac, &maclen);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned i = 0; i < maclen; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    size_t hl = 2 * (size_t)maclen;
    return strlen(answer) == hl && CRYPTO_memcmp(hex, answer, hl) == 0;
}

static void fail_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    replyf(s, 401, "authentication failed\n");
    close_after_write(s);
}

static void authenticate(struct session *s, int argc, char **argv)
{
    struct admin *a = s->a;
    if (argc == 2 && hmac_matches(a->secret, s->challenge, argv[1]))
        s->level = L_ADMIN;
    else if (argc == 2 && hmac_matches(a->operator_secret, s->challenge, argv[1]))
        s->level = L_OPERATOR;
    if (s->level) {
        memset(s->challenge, 0, sizeof s->challenge); /* one use only */
        struct timeval idle = {IDLE_S, 0};
        bufferevent_set_timeouts(s->bev, &idle, &idle);
        log_info(s->peer, "admin session authenticated (%s)", level_names[s->level]);
        replyf(s, 200, "authenticated as %s\n", level_names[s->level]);
        return;
    }
    a->auth_failures++;
    log_warn(s->peer, "admin authentication failed (%lu failures since start)", a->auth_failures);
    /* Answer late and close: a guesser gets one try per connection and
     * second; the challenge dies with the session. */
    bufferevent_disable(s->bev, EV_READ);
    s->delay_ev = evtimer_new(a->base, fail_cb, s);
    struct timeval tv = {FAIL_DELAY_MS / 1000, (FAIL_DELAY_MS % 1000) * 1000};
    if (!s->delay_ev || evtimer_add(s->delay_ev, &tv) < 0)
        fail_cb(-1, 0, s);
}

/* ---- sessions ---- */

static void run_line(struct session *s, char *line)
{
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            replyf(s, 400, "control characters are not allowed in commands\n");
            return;
        }
    char *argv[MAX_WORDS + 1], *save;
    int argc = 0;
    for (char *w = strtok_r(line, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (argc == MAX_WORDS) {
            replyf(s, 400, "too many words (at most %d)\n", MAX_WORDS);
            return;
        }
        argv[argc++] = w;
    }
    argv[argc] = NULL;
    if (argc == 0)
        return; /* an empty line: nothing to answer */
    if (s->level == L_NONE) {
        if (strcmp(argv[0], "auth") == 0) {
            authenticate(s, argc, argv);
            return;
        }
        if (strcmp(argv[0], "quit") != 0) {
            log_warn(s->peer, "admin command before authentication: refused");
            replyf(s, 401, "authenticate first: auth HEX(HMAC-SHA256(secret, challenge))\n");
            close_after_write(s);
            return;
        }
    }
    for (const struct command *c = commands; c->name; c++) {
        if (strcmp(c->name, argv[0]) != 0)
            continue;
        if (s->level < c->level) {
            log_warn(s->peer, "admin command '%s' refused: needs level %s", argv[0],
                     level_names[c->level]);
            replyf(s, 401, "'%s' needs level %s; this session is %s\n", argv[0],
                   level_names[c->level], level_names[s->level]);
            return;
        }
        log_info(s->peer, "admin command: %s%s%s", argv[0], argc > 1 ? " " : "",
                 argc > 1 ? argv[1] : "");
        c->fn(s, argc, argv);
        return;
    }
    replyf(s, 400, "unknown command '%.64s'; try 'help'\n", argv[0]);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!s->closing && !s->delay_ev) {
        size_t len;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (!line) {
            if (evbuffer_get_length(in) > MAX_LINE) {
                /* Drop what we have and the rest of the line when it comes. */
                evbuffer_drain(in, evbuffer_get_length(in));
                if (!s->skipping)
                    replyf(s, 400, "line too long (at most %d bytes)\n", MAX_LINE);
                s->skipping = 1;
            }
            return;
        }
        if (s->skipping) { /* the end of an over-long line */
            s->skipping = 0;
            free(line);
            continue;
        }
        if (len && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len > MAX_LINE) {
            replyf(s, 400, "line too long (at most %d bytes)\n", MAX_LINE);
        } else if (memchr(line, '\0', len)) {
            replyf(s, 400, "control characters are not allowed in commands\n");
        } else {
            run_line(s, line);
        }
        free(line);
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct session *s = arg;
    if (s->closing)
        session_free(s);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct session *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        log_debug(s->peer, "admin session closed");
        session_free(s);
    }
}

static int peer_allowed(int fd, char *why, size_t whylen)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        snprintf(why, whylen, "SO_PEERCRED: %s", strerror(errno));
        return 0;
    }
    if (cred.uid == 0 || cred.uid == geteuid())
        return 1;
    snprintf(why, whylen, "uid %u is neither root nor the service user", (unsigned)cred.uid);
    return 0;
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct alistener *l = arg;
    struct admin *a = l->a;
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_error(l->addr.text, "admin accept: %s", strerror(errno));
            return;
        }
        char peer[LISTEN_TEXT_MAX];
        if (l->is_unix)
            snprintf(peer, sizeof peer, "%s", l->addr.text);
        else
            sockaddr_text((struct sockaddr *)&ss, sl, peer, sizeof peer);
        char why[128];
        if (l->is_unix && !peer_allowed(fd, why, sizeof why)) {
            log_warn(peer, "admin session refused: %s", why);
            close(fd);
            continue;
        }
        struct session *s = calloc(1, sizeof *s);
        struct bufferevent *bev =
            s ? bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
        if (!bev) {
            free(s);
            close(fd);
            log_error(peer, "out of memory for an admin session");
            continue;
        }
        s->a = a;
        s->bev = bev;
        s->is_tcp = !l->is_unix;
        snprintf(s->peer, sizeof s->peer, "%s", peer);
        s->next = a->sessions;
        if (a->sessions)
            a->sessions->prev = s;
        a->sessions = s;
        a->nsessions++;
        bufferevent_setcb(bev, read_cb, write_cb, event_cb, s);
        /* An idle console session does not hold a slot for ever, and one
         * that has not authenticated holds it only briefly. */
        struct timeval idle = {l->is_unix ? IDLE_S : AUTH_S, 0};
        bufferevent_set_timeouts(bev, &idle, &idle);
        if (a->nsessions > a->max_sessions) {
            log_warn(peer, "admin session refused: %u sessions already", a->max_sessions);
            replyf(s, 500, "too many admin sessions (at most %u)\n", a->max_sessions);
            close_after_write(s);
            continue;
        }
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        if (s->is_tcp) {
            unsigned char rnd[32];
            if (RAND_bytes(rnd, sizeof rnd) != 1) {
                replyf(s, 500, "no randomness for a challenge\n");
                close_after_write(s);
                continue;
            }
            for (size_t k = 0; k < sizeof rnd; k++)
                snprintf(s->challenge + 2 * k, 3, "%02x", rnd[k]);
            reply(s, 401, s->challenge, 64);
        } else {
            s->level = L_ADMIN;
        }
        log_info(peer, "admin session opened%s", s->is_tcp ? " (authenticating)" : " (admin)");
    }
}

static void set_secrets(struct admin *a, const struct config *cfg)
{
    free(a->secret);
    free(a->operator_secret);
    a->secret = cfg->admin.secret ? strdup(cfg->admin.secret) : NULL;
    a->operator_secret = cfg->admin.operator_secret ? strdup(cfg->admin.operator_secret) : NULL;
    a->max_sessions = cfg->admin.max_sessions;
}

static int is_loopback(const struct listen_addr *a)
{
    if (a->family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
    if (a->family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
    return 1;
}

struct admin *admin_start(struct event_base *base, struct supervisor *sup, const struct config *cfg,
                          char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->base = base;
    a->sup = sup;
    set_secrets(a, cfg);
    for (size_t i = 0; i < cfg->admin.nlisten; i++) {
        const struct listen_addr *addr = &cfg->admin.listen[i];
        struct alistener *l = calloc(1, sizeof *l);
        if (!l) {
            snprintf(err, errlen, "out of memory");
            admin_stop(a);
            return NULL;
        }
        l->a = a;
        l->addr = *addr;
        l->is_unix = addr->family == AF_UNIX;
        if (l->is_unix) {
            /* The runtime folder may not exist yet (a fresh checkout, a
             * cleaned /run): make it, private. */
            char dir[sizeof((struct sockaddr_un *)0)->sun_path];
            snprintf(dir, sizeof dir, "%s", ((const struct sockaddr_un *)&addr->ss)->sun_path);
            char *slash = strrchr(dir, '/');
            if (slash && slash != dir) {
                *slash = '\0';
                if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                    snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
                    admin_stop(a);
                    return NULL;
                }
            }
        }
        l->fd = listener_open(addr, 128, err, errlen); /* scripts may connect in bursts */
        l->next = a->listeners;
        a->listeners = l;
        if (l->fd < 0) {
            admin_stop(a);
            return NULL;
        }
        if (l->is_unix && chmod(((const struct sockaddr_un *)&addr->ss)->sun_path, 0600) < 0) {
            snprintf(err, errlen, "chmod 0600 %s: %s", addr->text, strerror(errno));
            admin_stop(a);
            return NULL;
        }
        l->ev = event_new(base, l->fd, EV_READ | EV_PERSIST, accept_cb, l);
        if (!l->ev || event_add(l->ev, NULL) < 0) {
            snprintf(err, errlen, "cannot watch %s", addr->text);
            admin_stop(a);
            return NULL;
        }
        if (!l->is_unix && !is_loopback(addr))
            log_warn(addr->text, "the admin console listens beyond loopback: keep it firewalled");
        log_info(addr->text, "admin console listening");
    }
    return a;
}

void admin_reconfigure(struct admin *a, const struct config *cfg)
{
    set_secrets(a, cfg);
    size_t n = 0;
    for (struct alistener *l = a->listeners; l; l = l->next)
        n++;
    int same = n == cfg->admin.nlisten;
    for (size_t i = 0; same && i < cfg->admin.nlisten; i++) {
        int found = 0;
        for (struct alistener *l = a->listeners; l && !found; l = l->next)
            found = strcmp(l->addr.text, cfg->admin.listen[i].text) == 0;
        same = found;
    }
    if (!same)
        log_warn(NULL, "admin listeners changed: the new ones open at restart");
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    while (a->sessions)
        session_free(a->sessions);
    while (a->listeners) {
        struct alistener *l = a->listeners;
        a->listeners = l->next;
        if (l->ev)
            event_free(l->ev);
        if (l->fd >= 0) {
            close(l->fd);
            listener_unlink(&l->addr);
        }
        free(l);
    }
    if (a->secret)
        OPENSSL_cleanse(a->secret, strlen(a->secret));
    if (a->operator_secret)
        OPENSSL_cleanse(a->operator_secret, strlen(a->operator_secret));
    free(a->secret);
    free(a->operator_secret);
    free(a);
}
