/*
 * Loading a configuration file into an immutable snapshot (see config.h).
 *
 * The parse is strict: every group's keys are checked against the keys it
 * may have, every value against its type and range, and every listening
 * address against every other, before the snapshot exists at all.
 */
#include "core/config.h"

#include "core/bus.h"
#include "core/log.h"
#include "protocols/protocol.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *setting_file(struct cfg_ctx *ctx, const config_setting_t *s)
{
    const char *f = s ? config_setting_source_file(s) : NULL;
    return f ? f : ctx->file;
}

int cfg_error(struct cfg_ctx *ctx, const config_setting_t *at, const char *fmt, ...)
{
    int n = snprintf(ctx->err, ctx->errlen, "%s:%u: ", setting_file(ctx, at),
                     at ? config_setting_source_line(at) : 0);
    if (n < 0 || (size_t)n >= ctx->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int check_keys(struct cfg_ctx *ctx, const config_setting_t *group, const char *const *a,
                      const char *const *b)
{
    if (!config_setting_is_group(group))
        return cfg_error(ctx, group, "expected a group { ... }");
    for (int i = 0; i < config_setting_length(group); i++) {
        config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        int known = 0;
        for (const char *const *k = a; k && *k && !known; k++)
            known = strcmp(*k, name) == 0;
        for (const char *const *k = b; k && *k && !known; k++)
            known = strcmp(*k, name) == 0;
        if (!known)
            return cfg_error(ctx, s, "unknown key '%s'", name);
    }
    return 0;
}

int cfg_int(struct cfg_ctx *ctx, const config_setting_t *group, const char *key, long long min,
            long long max, long long *out)
{
    config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return 0;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return cfg_error(ctx, s, "'%s' must be an integer", key);
    long long v = config_setting_get_int64(s);
    if (v < min || v > max)
        return cfg_error(ctx, s, "'%s' must be between %lld and %lld", key, min, max);
    *out = v;
    return 0;
}

int cfg_duration_ms(struct cfg_ctx *ctx, const config_setting_t *group, const char *key,
                    unsigned max_s, unsigned *out_ms)
{
    config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return 0;
    double v;
    int t = config_setting_type(s);
    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
        v = (double)config_setting_get_int64(s);
    else if (t == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else
        return cfg_error(ctx, s, "'%s' must be a number of seconds", key);
    if (!(v >= 0 && v <= max_s))
        return cfg_error(ctx, s, "'%s' must be between 0 and %u seconds", key, max_s);
    *out_ms = (unsigned)llround(v * 1000);
    return 0;
}

int cfg_string(struct cfg_ctx *ctx, const config_setting_t *group, const char *key,
               const char **out)
{
    config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cfg_error(ctx, s, "'%s' must be a string", key);
    *out = config_setting_get_string(s);
    return 0;
}

int cfg_bool(struct cfg_ctx *ctx, const config_setting_t *group, const char *key, int *out)
{
    config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return cfg_error(ctx, s, "'%s' must be true or false", key);
    *out = config_setting_get_bool(s);
    return 0;
}

char *cfg_path(const struct cfg_ctx *ctx, const char *path)
{
    if (path[0] == '/' || !ctx->dir)
        return strdup(path);
    char *out;
    if (asprintf(&out, "%s/%s", ctx->dir, path) < 0)
        return NULL;
    return out;
}

static void free_service(struct service *s)
{
    if (s->pcfg && s->proto->free_cfg)
        s->proto->free_cfg(s->pcfg);
    free(s->name);
    free(s->listen);
}

static void config_free(struct config *c)
{
    for (size_t i = 0; i < c->nservices; i++)
        free_service(&c->services[i]);
    free(c->services);
    free(c->text);
    free(c->admin.listen);
    free(c->admin.secret_path);
    free(c->admin.operator_secret_path);
    if (c->admin.secret) /* wipe secrets before the memory goes back */
        memset(c->admin.secret, 0, strlen(c->admin.secret));
    if (c->admin.operator_secret)
        memset(c->admin.operator_secret, 0, strlen(c->admin.operator_secret));
    free(c->admin.secret);
    free(c->admin.operator_secret);
    free(c->path);
    free(c->dir);
    free(c->error_log);
    free(c->user);
    free(c->group);
    free(c);
}

struct config *config_ref(struct config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void config_unref(struct config *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        config_free(c);
}

const struct service *config_service(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->nservices; i++)
        if (strcmp(c->services[i].name, name) == 0)
            return &c->services[i];
    return NULL;
}

static int parse_workers(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    config_setting_t *s = config_setting_get_member(root, "workers");
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = online > 0 ? (int)online : 1;
    if (!s)
        return 0;
    if (config_setting_type(s) == CONFIG_TYPE_STRING) {
        if (strcmp(config_setting_get_string(s), "auto") != 0)
            return cfg_error(ctx, s, "'workers' must be \"auto\" or an integer from 1 to %d",
                             BUS_MAX_WORKERS);
        return 0;
    }
    long long n = 0;
    if (cfg_int(ctx, root, "workers", 1, BUS_MAX_WORKERS, &n) < 0)
        return -1;
    c->workers = (int)n;
    return 0;
}

static int parse_log(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    static const char *const keys[] = {"level", "error_log", NULL};
    c->log_level = MLOG_INFO;
    config_setting_t *g = config_setting_get_member(root, "log");
    const char *level = NULL, *target = "stderr";
    if (g) {
        if (check_keys(ctx, g, keys, NULL) < 0 || cfg_string(ctx, g, "level", &level) < 0 ||
            cfg_string(ctx, g, "error_log", &target) < 0)
            return -1;
        if (level && (c->log_level = log_level_parse(level)) < 0)
            return cfg_error(ctx, config_setting_get_member(g, "level"),
                             "'level' must be one of error, warn, info, debug");
    }
    c->error_log = strcmp(target, "stderr") == 0 ? strdup(target) : cfg_path(ctx, target);
    return c->error_log ? 0 : cfg_error(ctx, g, "out of memory");
}

static int parse_listen_list(struct cfg_ctx *ctx, config_setting_t *l, struct listen_addr **out,
                             size_t *nout);

static int parse_listen(struct cfg_ctx *ctx, config_setting_t *block, struct service *svc)
{
    config_setting_t *l = config_setting_get_member(block, "listen");
    if (!l)
        return cfg_error(ctx, block, "service '%s' needs 'listen'", svc->name);
    return parse_listen_list(ctx, l, &svc->listen, &svc->nlisten);
}

static int parse_listen_list(struct cfg_ctx *ctx, config_setting_t *l, struct listen_addr **out,
                             size_t *nout)
{
    struct service tmp = {0}, *svc = &tmp;
    if (config_setting_type(l) == CONFIG_TYPE_STRING) {
        svc->nlisten = 1;
    } else if (config_setting_is_array(l) || config_setting_is_list(l)) {
        svc->nlisten = (size_t)config_setting_length(l);
    } else {
        return cfg_error(ctx, l, "'listen' must be a string or a list of strings");
    }
    if (svc->nlisten == 0)
        return cfg_error(ctx, l, "'listen' is empty");
    svc->listen = calloc(svc->nlisten, sizeof *svc->listen);
    if (!svc->listen)
        return cfg_error(ctx, l, "out of memory");
    *nout = 0;
    for (size_t i = 0; i < svc->nlisten; i++) {
        config_setting_t *e = config_setting_type(l) == CONFIG_TYPE_STRING
                                  ? l
                                  : config_setting_get_elem(l, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING)
            return cfg_error(ctx, e, "'listen' entries must be strings");
        char msg[256];
        if (listen_addr_parse(config_setting_get_string(e), ctx->dir, &svc->listen[i], msg,
                              sizeof msg) < 0) {
            free(svc->listen);
            return cfg_error(ctx, e, "%s", msg);
        }
    }
    *out = svc->listen;
    *nout = svc->nlisten;
    return 0;
}

static int parse_service(struct cfg_ctx *ctx, const struct protocol *p, config_setting_t *block,
                         struct service *svc)
{
    static const char *const common[] = {"name", "listen", NULL};
    svc->proto = p;
    if (check_keys(ctx, block, common, p->keys) < 0)
        return -1;
    const char *name = NULL;
    if (cfg_string(ctx, block, "name", &name) < 0)
        return -1;
    if (!name || !*name)
        return cfg_error(ctx, block, "every %s service needs a non-empty 'name'", p->name);
    if (!(svc->name = strdup(name)))
        return cfg_error(ctx, block, "out of memory");
    if (parse_listen(ctx, block, svc) < 0)
        return -1;
    return p->parse(ctx, block, &svc->pcfg);
}

/* Lines of listen entries, for error messages about duplicates. */
static const config_setting_t *listen_entry(config_setting_t *block, size_t i)
{
    config_setting_t *l = config_setting_get_member(block, "listen");
    return config_setting_type(l) == CONFIG_TYPE_STRING ? l
                                                        : config_setting_get_elem(l, (unsigned)i);
}

static int parse_services(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    size_t total = 0;
    for (int p = 0; protocols_all[p]; p++) {
        config_setting_t *l = config_setting_get_member(root, protocols_all[p]->name);
        if (!l)
            continue;
        if (!config_setting_is_list(l))
            return cfg_error(ctx, l, "'%s' must be a list of services: ( { ... }, ... )",
                             protocols_all[p]->name);
        total += (size_t)config_setting_length(l);
    }
    c->services = calloc(total ? total : 1, sizeof *c->services);
    config_setting_t **blocks = calloc(total ? total : 1, sizeof *blocks);
    if (!c->services || !blocks) {
        free(blocks);
        return cfg_error(ctx, root, "out of memory");
    }
    int rc = 0;
    for (int p = 0; protocols_all[p] && rc == 0; p++) {
        config_setting_t *l = config_setting_get_member(root, protocols_all[p]->name);
        for (int i = 0; l && i < config_setting_length(l) && rc == 0; i++) {
            config_setting_t *block = config_setting_get_elem(l, (unsigned)i);
            struct service *svc = &c->services[c->nservices++];
            blocks[c->nservices - 1] = block;
            rc = parse_service(ctx, protocols_all[p], block, svc);
        }
    }
    /* Names and addresses must be unique across every service. */
    for (size_t i = 0; i < c->nservices && rc == 0; i++) {
        for (size_t j = 0; j < i && rc == 0; j++)
            if (strcmp(c->services[i].name, c->services[j].name) == 0)
                rc = cfg_error(ctx, config_setting_get_member(blocks[i], "name"),
                               "duplicate service name '%s'", c->services[i].name);
        for (size_t a = 0; a < c->services[i].nlisten && rc == 0; a++)
            for (size_t j = 0; j <= i && rc == 0; j++)
                for (size_t b = 0; b < (j == i ? a : c->services[j].nlisten) && rc == 0; b++)
                    if (strcmp(c->services[i].listen[a].text, c->services[j].listen[b].text) == 0)
                        rc = cfg_error(ctx, listen_entry(blocks[i], a),
                                       "duplicate listener %s (also in service '%s')",
                                       c->services[i].listen[a].text, c->services[j].name);
    }
    free(blocks);
    return rc;
}

/* A secret file: refused unless only its owner can read it. The content,
 * without a trailing newline, is the HMAC key. */
static int read_secret(struct cfg_ctx *ctx, config_setting_t *at, const char *path, char **out)
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
    if (!(*out = strdup(buf)))
        return cfg_error(ctx, at, "out of memory");
    return 0;
}

static int parse_admin(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    static const char *const keys[] = {"listen", "secret", "operator_secret", "max_sessions", NULL};
    struct admin_config *a = &c->admin;
    a->max_sessions = 16;
    config_setting_t *g = config_setting_get_member(root, "admin");
    if (!g) {
        /* Under systemd (RuntimeDirectory=), a Unix console by default. */
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
    if (!config_setting_is_group(g))
        return cfg_error(ctx, g, "'admin' must be a group { listen = ...; }");
    if (check_keys(ctx, g, keys, NULL) < 0)
        return -1;
    config_setting_t *l = config_setting_get_member(g, "listen");
    if (!l)
        return cfg_error(ctx, g, "'admin' needs 'listen'");
    if (parse_listen_list(ctx, l, &a->listen, &a->nlisten) < 0)
        return -1;
    long long maxs = 16;
    const char *secret = NULL, *op = NULL;
    if (cfg_int(ctx, g, "max_sessions", 1, 1000, &maxs) < 0 ||
        cfg_string(ctx, g, "secret", &secret) < 0 || cfg_string(ctx, g, "operator_secret", &op) < 0)
        return -1;
    a->max_sessions = (unsigned)maxs;
    if (secret) {
        if (!(a->secret_path = cfg_path(ctx, secret)) ||
            read_secret(ctx, config_setting_get_member(g, "secret"), a->secret_path, &a->secret) <
                0)
            return a->secret_path ? -1 : cfg_error(ctx, g, "out of memory");
    }
    if (op) {
        if (!(a->operator_secret_path = cfg_path(ctx, op)) ||
            read_secret(ctx, config_setting_get_member(g, "operator_secret"),
                        a->operator_secret_path, &a->operator_secret) < 0)
            return a->operator_secret_path ? -1 : cfg_error(ctx, g, "out of memory");
    }
    int tcp = 0;
    for (size_t i = 0; i < a->nlisten; i++)
        tcp |= a->listen[i].family != AF_UNIX;
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

static int parse_root(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    static const char *const keys[] = {"workers", "user",         "group",
                                       "log",     "grace_period", "worker_connections",
                                       "backlog", "admin",        NULL};
    const char *proto_keys[16] = {0};
    for (int p = 0; protocols_all[p] && p < 15; p++)
        proto_keys[p] = protocols_all[p]->name;
    if (check_keys(ctx, root, keys, proto_keys) < 0 || parse_workers(ctx, root, c) < 0 ||
        parse_log(ctx, root, c) < 0)
        return -1;

    long long conns = 10000, backlog = 511;
    c->grace_ms = 10000;
    const char *user = NULL, *group = NULL;
    if (cfg_int(ctx, root, "worker_connections", 1, 1000000, &conns) < 0 ||
        cfg_int(ctx, root, "backlog", 1, 65535, &backlog) < 0 ||
        cfg_duration_ms(ctx, root, "grace_period", 3600, &c->grace_ms) < 0 ||
        cfg_string(ctx, root, "user", &user) < 0 || cfg_string(ctx, root, "group", &group) < 0)
        return -1;
    c->worker_connections = (unsigned)conns;
    c->backlog = (int)backlog;
    if ((user && !(c->user = strdup(user))) || (group && !(c->group = strdup(group))))
        return cfg_error(ctx, root, "out of memory");
    return parse_services(ctx, root, c) < 0 ? -1 : parse_admin(ctx, root, c);
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct config *c = calloc(1, sizeof *c);
    char *tmp = strdup(path);
    char dir[PATH_MAX];
    if (!c || !tmp) {
        snprintf(err, errlen, "%s:0: out of memory", path);
        free(c);
        free(tmp);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->path = strdup(path);
    /* Resolve the folder once, so relative paths survive a later chdir. */
    if (!realpath(dirname(tmp), dir))
        snprintf(dir, sizeof dir, "%s", ".");
    free(tmp);
    c->dir = strdup(dir);

    config_t cf;
    config_init(&cf);
    config_set_include_dir(&cf, c->dir);
    struct cfg_ctx ctx = {.file = path, .dir = c->dir, .err = err, .errlen = errlen};
    int rc;
    if (!config_read_file(&cf, path)) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "%s:0: cannot read: %s", path, strerror(errno));
        else
            snprintf(err, errlen, "%s:%d: %s",
                     config_error_file(&cf) ? config_error_file(&cf) : path, config_error_line(&cf),
                     config_error_text(&cf));
        rc = -1;
    } else {
        rc = parse_root(&ctx, config_root_setting(&cf), c);
    }
    config_destroy(&cf);
    if (rc < 0) {
        config_free(c);
        return NULL;
    }
    /* The text as loaded, for the console's 'config' (secrets live in their
     * own files, so the text holds only their paths). */
    FILE *f = fopen(path, "re");
    if (f) {
        size_t cap = 0;
        if (getdelim(&c->text, &cap, '\0', f) < 0) {
            free(c->text);
            c->text = NULL;
        }
        fclose(f);
    }
    return c;
}
