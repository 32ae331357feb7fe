/*
 * The console's own commands: each parses its words, acts through the
 * supervisor's functions (core/supervisor.h) and answers with one reply.
 * Modules add theirs through core/module.h. Supervisor thread only.
 */
#include "admin/console_impl.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/supervisor.h"
#include "core/throttle.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static void cmd_help(struct admin_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    admin_help(s);
}

static void add_totals(struct worker_stats_snapshot *t, int id)
{
    struct worker_stats_snapshot w;
    stats_read(id, &w);
    stats_sum(t, &w);
}

static void cmd_info(struct admin_session *s, int argc, char **argv)
{
    int json = is_json(&argc, argv);
    struct sup_worker_view v[SUP_MAX_VIEWS];
    int n = sup_workers(s->a->sup, v, SUP_MAX_VIEWS);
    struct worker_stats_snapshot t = {0}; /* stopped workers' counters count too */
    int live = 0;
    for (int i = 0; i < n; i++) {
        add_totals(&t, v[i].id);
        live += strcmp(v[i].state, "stopped") != 0;
    }
    long long uptime = (long long)time(NULL) - stats_started();
    struct sbuf sb = {0};
    if (json) {
        sb_addf(&sb, "{\"version\":\"%s\",\"pid\":%d,\"uptime_seconds\":%lld,\"config\":",
                MEDUSA_VERSION, (int)getpid(), uptime);
        json_str(&sb, sup_config_path(s->a->sup));
        sb_addf(&sb,
                ",\"workers\":%d,\"workers_in_file\":%d,\"connections_accepted\":%llu,"
                "\"connections_active\":%llu,"
                "\"requests\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,\"errors\":%llu,"
                "\"refused\":%llu}\n",
                live, sup_config(s->a->sup)->workers, (unsigned long long)t.accepted,
                (unsigned long long)t.active, (unsigned long long)t.requests,
                (unsigned long long)t.bytes_in, (unsigned long long)t.bytes_out,
                (unsigned long long)t.errors, (unsigned long long)t.refused);
    } else {
        sb_addf(&sb,
                "version      %s\npid          %d\nuptime       %lld s\nconfig       %s\n"
                "workers      %d (the file says %d)\naccepted     %llu\nactive       %llu\n"
                "requests     %llu\nbytes in     %llu\nbytes out    %llu\nerrors       %llu\n"
                "refused      %llu\n",
                MEDUSA_VERSION, (int)getpid(), uptime, sup_config_path(s->a->sup), live,
                sup_config(s->a->sup)->workers, (unsigned long long)t.accepted,
                (unsigned long long)t.active, (unsigned long long)t.requests,
                (unsigned long long)t.bytes_in, (unsigned long long)t.bytes_out,
                (unsigned long long)t.errors, (unsigned long long)t.refused);
    }
    admin_send_sb(s, 200, &sb);
}

static void cmd_workers(struct admin_session *s, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "set") == 0) {
        char *end = NULL;
        long n = argc == 3 ? strtol(argv[2], &end, 10) : 0;
        if (argc != 3 || *end || n < 1 || n > BUS_MAX_WORKERS) {
            admin_replyf(s, 400, "usage: workers set N  (1 to %d)\n", BUS_MAX_WORKERS);
            return;
        }
        if (s->level < MODULE_ADMIN) {
            admin_replyf(s, 401, "'workers set' needs level admin; this session is operator\n");
            return;
        }
        char msg[256];
        log_warn(s->peer, "workers set %ld from the console", n);
        if (sup_scale(s->a->sup, (int)n, msg, sizeof msg) < 0)
            admin_replyf(s, 500, "%s\n", msg);
        else
            admin_replyf(s, 200, "%s", msg);
        return;
    }
    int json = is_json(&argc, argv);
    if (argc > 1) {
        admin_replyf(s, 400, "usage: workers [json] | workers set N\n");
        return;
    }
    struct sup_worker_view v[SUP_MAX_VIEWS];
    int n = sup_workers(s->a->sup, v, SUP_MAX_VIEWS);
    struct sbuf sb = {0};
    if (json)
        sb_adds(&sb, "[");
    else
        sb_addf(&sb, "%-6s %-9s %8s %10s %10s %14s %14s %6s %8s\n", "id", "state", "active",
                "accepted", "requests", "bytes_in", "bytes_out", "inbox", "lag_ms");
    for (int i = 0; i < n; i++) {
        struct worker_stats_snapshot w;
        stats_read(v[i].id, &w);
        unsigned long long act = w.active, acc = w.accepted, req = w.requests, bin = w.bytes_in,
                           bout = w.bytes_out, clo = w.closed;
        double lag = (double)w.lag_us / 1000.0;
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
    admin_send_sb(s, 200, &sb);
}

struct listing {
    struct sbuf sb;
    int json, count;
};

static void list_one(void *arg, const struct sup_listener_view *v)
{
    struct listing *l = arg;
    const char *state = v->enabled ? "enabled" : "disabled";
    if (l->json) {
        sb_addf(&l->sb, "%s{\"id\":%u,\"service\":", l->count ? "," : "", v->id);
        json_str(&l->sb, v->service);
        sb_adds(&l->sb, ",\"address\":");
        json_str(&l->sb, v->text);
        sb_addf(&l->sb, ",\"state\":\"%s\",\"sockets\":%u,\"held\":{", state, v->sockets);
        for (int w = 1, first = 1; v->held && w <= BUS_MAX_WORKERS; w++)
            if (v->held[w]) {
                sb_addf(&l->sb, "%s\"%d\":%u", first ? "" : ",", w, v->held[w]);
                first = 0;
            }
        sb_adds(&l->sb, "}}");
    } else {
        sb_addf(&l->sb, "%-6u %-16s %-9s %7u %s\n", v->id, v->service, state, v->sockets, v->text);
    }
    l->count++;
}

static void cmd_worker(struct admin_session *s, int argc, char **argv)
{
    int restart = argc == 3 && strcmp(argv[1], "restart") == 0;
    char *end = NULL;
    long id = argc == 3 ? strtol(argv[2], &end, 10) : 0;
    if (argc != 3 || (!restart && strcmp(argv[1], "drain") != 0) || *end || id < 1) {
        admin_replyf(s, 400, "usage: worker drain ID | worker restart ID\n");
        return;
    }
    char msg[256];
    log_warn(s->peer, "worker %s %ld from the console", argv[1], id);
    if (sup_drain(s->a->sup, (int)id, restart, msg, sizeof msg) < 0)
        admin_replyf(s, 400, "%s\n", msg);
    else
        admin_replyf(s, 200, "%s", msg);
}

static void cmd_listeners(struct admin_session *s, int argc, char **argv)
{
    struct listing l = {.json = is_json(&argc, argv)};
    if (argc > 1) {
        admin_replyf(s, 400, "usage: listeners [json]\n");
        return;
    }
    if (l.json)
        sb_adds(&l.sb, "[");
    else
        sb_addf(&l.sb, "%-6s %-16s %-9s %7s %s\n", "id", "service", "state", "sockets", "address");
    sup_each_listener(s->a->sup, list_one, &l);
    if (l.json)
        sb_adds(&l.sb, "]\n");
    admin_send_sb(s, 200, &l.sb);
}

static void cmd_stats(struct admin_session *s, int argc, char **argv)
{
    int json = is_json(&argc, argv);
    if (argc > 1) {
        admin_replyf(s, 400, "usage: stats [json]\n");
        return;
    }
    struct sbuf sb = {0};
    stats_report(sup_config(s->a->sup), json ? MODULE_STATS_JSON : MODULE_STATS_TEXT, &sb);
    admin_send_sb(s, 200, &sb);
}

static void cmd_reload(struct admin_session *s, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        admin_replyf(s, 400, "usage: reload\n");
        return;
    }
    char err[CONFIG_ERR_MAX];
    if (sup_reload(s->a->sup, err, sizeof err) < 0)
        admin_replyf(s, 500, "reload failed: %s\nthe old configuration is still active\n", err);
    else
        admin_replyf(s, 200, "configuration reloaded\n");
}

static void cmd_config(struct admin_session *s, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        admin_replyf(s, 400, "usage: config\n");
        return;
    }
    const struct config *c = sup_config(s->a->sup);
    struct sbuf sb = {0};
    sb_addf(&sb, "# %s (as loaded; secrets are in their own files and not shown)\n", c->path);
    sb_adds(&sb, c->text ? c->text : "");
    if (sb.len && sb.p[sb.len - 1] != '\n')
        sb_adds(&sb, "\n");
    admin_send_sb(s, 200, &sb);
}

/* The console's routine lines (sessions opening and authenticating, each
 * command run) would otherwise fill the tail that the console itself asks
 * for; what commands do (workers set, kill, ...) is logged apart and kept. */
static int console_routine(const char *line)
{
    return strstr(line, ": admin session ") || strstr(line, ": admin command: ");
}

struct tail {
    struct sbuf sb;
    size_t *ends; /* where each kept line ends in sb */
    size_t n;
    int all;
};

static void tail_line(void *arg, const char *line)
{
    struct tail *t = arg;
    if (!t->all && console_routine(line))
        return;
    sb_adds(&t->sb, line);
    sb_adds(&t->sb, "\n");
    t->ends[t->n++] = t->sb.len;
}

static void cmd_log(struct admin_session *s, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "tail") == 0 && argc <= 4) {
        long n = 20;
        int all = 0;
        for (int i = 2; i < argc; i++) {
            char *end;
            if (strcmp(argv[i], "all") == 0) {
                all = 1;
                continue;
            }
            n = strtol(argv[i], &end, 10);
            if (*end || n < 1 || n > 256) {
                admin_replyf(s, 400,
                             "usage: log tail [N] [all]  (N from 1 to 256; all: with "
                             "the console's own lines)\n");
                return;
            }
        }
        size_t ends[256];
        struct tail t = {.ends = ends, .all = all};
        log_tail(256, tail_line, &t); /* the whole ring, then its last n kept lines */
        size_t from = t.n > (size_t)n ? ends[t.n - (size_t)n - 1] : 0;
        struct sbuf sb = {0};
        sb_add(&sb, t.sb.p ? t.sb.p + from : "", t.sb.len - from);
        sb_free(&t.sb);
        admin_send_sb(s, 200, &sb);
        return;
    }
    if (s->level < MODULE_ADMIN && argc >= 2) {
        admin_replyf(s, 401, "'log %s' needs level admin; this session is operator\n", argv[1]);
        return;
    }
    if (argc == 3 && strcmp(argv[1], "level") == 0) {
        int lv = log_level_parse(argv[2]);
        if (lv < 0) {
            admin_replyf(s, 400, "log level: one of error, warn, info, debug\n");
            return;
        }
        log_set_level((enum log_level)lv);
        log_warn(s->peer, "log level set to %s from the console", argv[2]);
        admin_replyf(s, 200, "log level is %s\n", argv[2]);
        return;
    }
    if (argc == 2 && strcmp(argv[1], "reopen") == 0) {
        if (sup_reopen_logs(s->a->sup) < 0)
            admin_replyf(s, 500, "a log file could not be reopened; see the error log\n");
        else
            admin_replyf(s, 200, "log files reopened\n");
        return;
    }
    admin_replyf(s, 400, "usage: log level LEVEL | log reopen | log tail [N] [all]\n");
}

int admin_query_format(const struct admin_query *q, struct sbuf *out)
{
    int status = 200;
    switch (q->kind) {
    case ADMIN_Q_CONNS:
        if (q->json) {
            /* workers send one object per line: join them into an array */
            sb_adds(out, "[");
            int first = 1;
            for (char *line = q->sb.p, *nl; line && *line; line = nl + 1) {
                nl = strchr(line, '\n');
                if (!nl)
                    break;
                if (!first)
                    sb_adds(out, ",");
                sb_add(out, line, (size_t)(nl - line));
                first = 0;
            }
            sb_adds(out, "]\n");
        } else {
            sb_addf(out, "%-20s %-6s %-12s %-24s %6s %6s %10s %10s %s\n", "id", "worker", "service",
                    "peer", "age_s", "idle_s", "bytes_in", "bytes_out", "state");
            sb_add(out, q->sb.p ? q->sb.p : "", q->sb.len);
        }
        break;
    case ADMIN_Q_KILL:
        if (q->sum)
            sb_addf(out, "connection %s closed\n", q->what);
        else {
            status = 400;
            sb_addf(out, "no connection %s\n", q->what);
        }
        break;
    case ADMIN_Q_LISTENER_OFF:
    case ADMIN_Q_LISTENER_ON:
        sb_addf(out, "%s %s on %llu worker socket%s\n", q->what,
                q->kind == ADMIN_Q_LISTENER_OFF
                    ? "disabled: no new connections, existing ones go on"
                    : "enabled",
                (unsigned long long)q->sum, q->sum == 1 ? "" : "s");
        break;
    }
    return status;
}

static void cmd_conns(struct admin_session *s, int argc, char **argv)
{
    int json = is_json(&argc, argv);
    int worker = 0;
    const char *service = NULL;
    for (int i = 1; i < argc; i++) {
        char *end;
        long n = strtol(argv[i], &end, 10);
        if (!*end && !worker && n > 0) {
            if (!admin_worker_exists(s, (int)n)) {
                admin_replyf(s, 400, "no worker %ld\n", n);
                return;
            }
            worker = (int)n;
        } else if (!service && *end) {
            service = argv[i];
        } else {
            admin_replyf(s, 400, "usage: conns [WORKER] [SERVICE] [json]\n");
            return;
        }
    }
    admin_ask(s, ADMIN_Q_CONNS, worker, (uint64_t)json, service, NULL, json);
}

static void cmd_kill(struct admin_session *s, int argc, char **argv)
{
    char *end = NULL;
    unsigned long long id = argc == 2 ? strtoull(argv[1], &end, 10) : 0;
    if (argc != 2 || *end || !id) {
        admin_replyf(s, 400, "usage: kill CONNECTION_ID  (ids from 'conns')\n");
        return;
    }
    log_warn(s->peer, "kill connection %llu from the console", id);
    /* Every worker is asked: a session keeps its id when it moves. */
    admin_ask(s, ADMIN_Q_KILL, 0, id, NULL, argv[1], 0);
}

/* Failed logins counted per address (core/throttle.h), and forgiving them. */
static void cmd_throttle(struct admin_session *s, int argc, char **argv)
{
    int json = is_json(&argc, argv);
    if (argc >= 2 && strcmp(argv[1], "clear") == 0) {
        if (s->level < MODULE_ADMIN) {
            admin_replyf(s, 401, "'throttle clear' needs level admin; this session is operator\n");
            return;
        }
        if (argc > 3) {
            admin_replyf(s, 400, "usage: throttle clear [ADDRESS]\n");
            return;
        }
        size_t n = throttle_clear(argc == 3 ? argv[2] : NULL);
        log_warn(s->peer, "failed-login counts cleared from the console: %s (%zu)",
                 argc == 3 ? argv[2] : "every address", n);
        admin_replyf(s, 200, "%zu address%s cleared\n", n, n == 1 ? "" : "es");
        return;
    }
    if (argc != 1) {
        admin_replyf(s, 400, "usage: throttle [json] | throttle clear [ADDRESS]\n");
        return;
    }
    struct sbuf sb = {0};
    throttle_report(&sb, json);
    admin_send_sb(s, 200, &sb);
}

/* A test hook, off unless medusad runs with MEDUSA_TEST_HOOKS=1: block one
 * worker's event loop, as a wedged worker would (the watchdog's test). */
static void cmd_debug(struct admin_session *s, int argc, char **argv)
{
    char *e1 = NULL, *e2 = NULL;
    long id = argc == 4 ? strtol(argv[2], &e1, 10) : 0;
    long ms = argc == 4 ? strtol(argv[3], &e2, 10) : 0;
    if (!getenv("MEDUSA_TEST_HOOKS")) {
        admin_replyf(s, 400, "test hooks are off (MEDUSA_TEST_HOOKS=1 turns them on)\n");
        return;
    }
    if (argc != 4 || strcmp(argv[1], "stall") != 0 || *e1 || *e2 || id < 1 ||
        id > BUS_MAX_WORKERS || !bus_is_live((int)id) || ms < 1 || ms > 60000) {
        admin_replyf(s, 400, "usage: debug stall WORKER MILLISECONDS\n");
        return;
    }
    struct msg m = {.type = MSG_STALL, .a = (uint64_t)ms};
    bus_send((int)id, &m);
    admin_replyf(s, 200, "worker %ld stalls for %ld ms\n", id, ms);
}

static void cmd_listener(struct admin_session *s, int argc, char **argv)
{
    int on = argc == 3 && strcmp(argv[1], "enable") == 0;
    if (argc != 3 || (!on && strcmp(argv[1], "disable") != 0)) {
        admin_replyf(s, 400, "usage: listener disable|enable ADDRESS|SERVICE\n");
        return;
    }
    if (sup_listener_enable(s->a->sup, argv[2], on) == 0) {
        admin_replyf(s, 400, "no listener or service '%.64s'; see 'listeners'\n", argv[2]);
        return;
    }
    log_warn(s->peer, "listener %s %s from the console", argv[2], on ? "enabled" : "disabled");
    admin_ask(s, on ? ADMIN_Q_LISTENER_ON : ADMIN_Q_LISTENER_OFF, 0, 0, argv[2], argv[2], 0);
}

static void cmd_shutdown(struct admin_session *s, int argc, char **argv)
{
    int now = argc == 2 && strcmp(argv[1], "now") == 0;
    if (argc > 2 || (argc == 2 && !now && strcmp(argv[1], "graceful") != 0)) {
        admin_replyf(s, 400, "usage: shutdown [graceful|now]\n");
        return;
    }
    unsigned grace = now ? 0 : sup_config(s->a->sup)->grace_ms;
    admin_replyf(s, 200, "shutting down (%s)\n", now ? "now" : "graceful");
    log_warn(s->peer, "shutdown (%s) from the console", now ? "now" : "graceful");
    sup_stop(s->a->sup, grace);
}

static void cmd_quit(struct admin_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    admin_replyf(s, 200, "bye\n");
    admin_close_after_write(s);
}

const struct admin_command admin_commands[] = {
    {"help", MODULE_OPERATOR, "help", "this list", cmd_help},
    {"info", MODULE_OPERATOR, "info [json]", "version, pid, uptime, config, totals", cmd_info},
    {"workers", MODULE_OPERATOR, "workers [json] | workers set N",
     "per worker state and counters; scale live (set: admin)", cmd_workers},
    {"worker", MODULE_ADMIN, "worker drain ID | worker restart ID",
     "stop one taking connections, finish its sessions", cmd_worker},
    {"listeners", MODULE_OPERATOR, "listeners [json]", "open listeners", cmd_listeners},
    {"stats", MODULE_OPERATOR, "stats [json]",
     "every figure, of every module (JSON: as /status.json)", cmd_stats},
    {"config", MODULE_OPERATOR, "config", "the active configuration", cmd_config},
    {"log", MODULE_OPERATOR, "log tail [N] [all] | level L | reopen",
     "recent lines (level, reopen: admin)", cmd_log},
    {"conns", MODULE_OPERATOR, "conns [WORKER] [SERVICE] [json]", "open connections", cmd_conns},
    {"kill", MODULE_ADMIN, "kill ID", "close one connection", cmd_kill},
    {"throttle", MODULE_OPERATOR, "throttle [json] | throttle clear [ADDRESS]",
     "failed logins per address; clear forgives them (admin)", cmd_throttle},
    {"listener", MODULE_ADMIN, "listener disable|enable ADDR|NAME",
     "stop/resume accepting (connections kept)", cmd_listener},
    {"reload", MODULE_ADMIN, "reload", "reload the configuration; says the outcome", cmd_reload},
    {"shutdown", MODULE_ADMIN, "shutdown [graceful|now]", "stop the server", cmd_shutdown},
    {"quit", MODULE_ANYONE, "quit", "end this session", cmd_quit},
    {"debug", MODULE_ADMIN, "debug stall WORKER MS", "test hook (only with MEDUSA_TEST_HOOKS=1)",
     cmd_debug},
    {NULL, 0, NULL, NULL, NULL},
};
