/*
 * The admin console's module: its configuration section, and the part that
 * runs on each worker, answering the console's questions about that
 * worker's connections and listeners. The console itself (sessions,
 * commands) is console.c and commands.c, on the supervisor.
 */
#include "admin/admin.h"

#include "admin/console_impl.h"
#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/worker.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- configuration ---- */

static void admin_free_section(void *p)
{
    struct admin_config *a = p;
    if (!a)
        return;
    free(a->listen);
    tls_service_free(a->tls);
    free(a->secret_path);
    free(a->operator_secret_path);
    if (a->secret) /* wipe secrets before the memory goes back */
        memset(a->secret, 0, strlen(a->secret));
    if (a->operator_secret)
        memset(a->operator_secret, 0, strlen(a->operator_secret));
    free(a->secret);
    free(a->operator_secret);
    free(a);
}

/* A secret file: refused unless only its owner can read it. The content,
 * without a trailing newline, is the HMAC key. */
static int read_secret(struct cfg_ctx *ctx, const config_setting_t *at, const char *path,
                       char **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cfg_error(ctx, at, "secret file %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        close(fd);
        return cfg_error(ctx, at,
                         "secret file %s is readable by group or others (mode %03o): chmod 600 it",
                         path, (unsigned)(st.st_mode & 0777));
    }
    char buf[4097];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0 || n == (ssize_t)sizeof buf)
        return cfg_error(ctx, at, "secret file %s: %s", path,
                         n < 0 ? strerror(errno) : "longer than 4096 bytes");
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n < 16)
        return cfg_error(ctx, at, "secret file %s: a secret needs at least 16 bytes", path);
    buf[n] = '\0';
    *out = strdup(buf);
    memset(buf, 0, sizeof buf);
    return *out ? 0 : cfg_error(ctx, at, "out of memory");
}

static int secret_key(struct cfg_ctx *ctx, const config_setting_t *g, const char *key, char **path,
                      char **secret)
{
    const char *name = NULL;
    if (cfg_string(ctx, g, key, &name) < 0)
        return -1;
    if (!name)
        return 0;
    if (!(*path = cfg_path(ctx, name)))
        return cfg_error(ctx, g, "out of memory");
    return read_secret(ctx, config_setting_get_member(g, key), *path, secret);
}

/* No admin group: under systemd (RuntimeDirectory=), a Unix console in
 * that folder; otherwise none. */
static int default_listener(struct cfg_ctx *ctx, const config_setting_t *root,
                            struct admin_config *a)
{
    const char *rt = getenv("RUNTIME_DIRECTORY");
    if (!rt || !*rt)
        return 0;
    char text[PATH_MAX + 16], msg[256];
    snprintf(text, sizeof text, "unix:%s/admin.sock", rt);
    if (!(a->listen = calloc(1, sizeof *a->listen)) ||
        listen_addr_parse(text, ctx->dir, a->listen, msg, sizeof msg) < 0)
        return cfg_error(ctx, root, "default admin socket %s: %s", text,
                         a->listen ? msg : "out of memory");
    a->nlisten = 1;
    return 0;
}

static int admin_parse_section(struct cfg_ctx *ctx, const config_setting_t *g,
                               const struct config *c, void **out)
{
    static const char *const keys[] = {
        "listen",       "tls_listen",       "tls", "secret", "operator_secret",
        "max_sessions", "max_conns_per_ip", NULL};
    struct admin_config *a = calloc(1, sizeof *a);
    if (!a)
        return cfg_error(ctx, g, "out of memory");
    *out = a;
    a->max_sessions = 16;
    if (!g)
        return default_listener(ctx, NULL, a);
    if (cfg_check_keys(ctx, g, "'admin'", keys, NULL) < 0)
        return -1;
    const config_setting_t *l = config_setting_get_member(g, "listen"),
                           *tl = config_setting_get_member(g, "tls_listen"),
                           *tb = config_setting_get_member(g, "tls");
    if (!l && !tl)
        return cfg_error(ctx, g, "'admin' needs 'listen' or 'tls_listen'");
    if (l && cfg_listen(ctx, l, &a->listen, &a->nlisten) < 0)
        return -1;
    size_t nplain = a->nlisten;
    if (tl && cfg_listen_tls(ctx, tl, &a->listen, &a->nlisten) < 0)
        return -1;
    for (size_t i = nplain; i < a->nlisten; i++)
        if (a->listen[i].family == AF_UNIX)
            return cfg_error(ctx, tl,
                             "'tls_listen' takes TCP addresses (the Unix socket is "
                             "protected by its file mode)");
    if (tl && !tb)
        return cfg_error(ctx, tl, "'tls_listen' needs a 'tls' block with the certificate");
    if (tb && !tl)
        return cfg_error(ctx, tb, "'tls' has no listener: add 'tls_listen'");
    if (tb && cfg_tls(ctx, tb, "admin", NULL, &a->tls) < 0)
        return -1;
    if (!l)
        l = tl; /* for the messages below */
    long long maxs = 16, per_ip = 0;
    if (cfg_int(ctx, g, "max_sessions", 1, 1000, &maxs) < 0 ||
        cfg_int(ctx, g, "max_conns_per_ip", 0, 1000, &per_ip) < 0 ||
        secret_key(ctx, g, "secret", &a->secret_path, &a->secret) < 0 ||
        secret_key(ctx, g, "operator_secret", &a->operator_secret_path, &a->operator_secret) < 0)
        return -1;
    a->max_sessions = (unsigned)maxs;
    a->max_conns_per_ip = (unsigned)per_ip;
    int tcp = 0;
    for (size_t i = 0; i < a->nlisten; i++) {
        tcp |= a->listen[i].family != AF_UNIX;
        if (a->listen[i].proxy_protocol) /* the console is reached directly, never balanced */
            return cfg_error(ctx, l, "admin listener %s: the console takes no proxy_protocol",
                             a->listen[i].text);
    }
    if (tcp && !a->secret && !a->operator_secret)
        return cfg_error(ctx, l, "a TCP admin listener needs 'secret' or 'operator_secret'");
    for (size_t i = 0; i < a->nlisten; i++)
        for (size_t j = 0; j < c->nservices; j++)
            for (size_t k = 0; k < c->services[j].nlisten; k++)
                if (strcmp(a->listen[i].text, c->services[j].listen[k].text) == 0)
                    return cfg_error(ctx, l, "admin listener %s is also service '%s''s",
                                     a->listen[i].text, c->services[j].name);
    return 0;
}

/* ---- on each worker: the console's questions ---- */

static void reply(struct worker *w, uint64_t query, uint64_t num, char *text)
{
    struct msg m = {.module = (uint16_t)module_id(&admin_module),
                    .type = ADMIN_REPLY,
                    .a = query,
                    .b = num,
                    .ptr = text,
                    .free_fn = free};
    (void)w;
    bus_send(BUS_SUPERVISOR, &m);
}

static void describe_conn(struct worker *w, struct conn *c, int json, struct sbuf *sb)
{
    struct timeval now;
    event_base_gettimeofday_cached(w->base, &now);
    char what[160];
    worker_describe_conn(w, c, what, sizeof what);
    long long age = (long long)(now.tv_sec - c->started.tv_sec);
    long long idle = (long long)(now.tv_sec - c->last_active);
    if (json) {
        sb_addf(sb, "{\"id\":%llu,\"worker\":%d,\"service\":\"", (unsigned long long)c->id, w->id);
        sb_add_json(sb, c->svc->name);
        sb_adds(sb, "\",\"peer\":\"");
        sb_add_json(sb, c->peer);
        sb_addf(sb,
                "\",\"age_s\":%lld,\"idle_s\":%lld,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                "\"state\":\"",
                age, idle, (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out);
        sb_add_json(sb, what);
        sb_adds(sb, "\"}\n");
        return;
    }
    for (char *p = what; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    sb_addf(sb, "%-20llu %-6d %-12s %-24s %6lld %6lld %10llu %10llu %s\n",
            (unsigned long long)c->id, w->id, c->svc->name, c->peer, age, idle,
            (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out, what);
}

void admin_worker_answer(struct worker *w, struct msg *m)
{
    switch (m->type) {
    case ADMIN_Q_CONNS: {
        struct sbuf sb = {0};
        struct list *pos;
        list_for_each(pos, &w->conns)
        {
            struct conn *c = list_entry(pos, struct conn, node);
            if (!m->ptr || strcmp(m->ptr, c->svc->name) == 0)
                describe_conn(w, c, (int)m->b, &sb);
        }
        if (sb.failed)
            sb_free(&sb);
        reply(w, m->a, 0, sb.p);
        break;
    }
    case ADMIN_Q_KILL: {
        struct conn *c = worker_find_conn(w, m->b);
        if (c) {
            log_info(c->peer, "connection %llu closed by the admin console",
                     (unsigned long long)c->id);
            conn_close(c);
        }
        reply(w, m->a, c != NULL, NULL);
        break;
    }
    case ADMIN_Q_LISTENER_OFF:
    case ADMIN_Q_LISTENER_ON:
        reply(w, m->a, (uint64_t)worker_listeners_enable(w, m->ptr, m->type == ADMIN_Q_LISTENER_ON),
              NULL);
        break;
    default:
        log_error(NULL, "admin: unexpected message %u", m->type);
    }
    msg_release(m);
}

static void *admin_worker_init(struct worker *w)
{
    return w; /* nothing of its own: the answers read the worker */
}

static void admin_message(void *state, struct msg *m)
{
    admin_worker_answer(state, m);
}

const struct module admin_module = {
    .name = "admin",
    .parse_section = admin_parse_section,
    .free_section = admin_free_section,
    .worker_init = admin_worker_init,
    .message = admin_message,
    .sup_init = admin_console_start,
    .sup_config = admin_console_reconfigure,
    .sup_dispose = admin_console_stop,
    .sup_message = admin_console_message,
};
