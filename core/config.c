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
#include "core/module.h"
#include "core/tls.h"

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

static int key_in(const char *name, const char *const *keys)
{
    for (const char *const *k = keys; k && *k; k++)
        if (strcmp(*k, name) == 0)
            return 1;
    return 0;
}

int cfg_check_keys(struct cfg_ctx *ctx, const config_setting_t *group, const char *what,
                   const char *const *keys, const char *const *more)
{
    if (!config_setting_is_group(group))
        return cfg_error(ctx, group, "%s must be a group { ... }", what);
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        if (!key_in(name, keys) && !key_in(name, more))
            return cfg_error(ctx, s, "unknown key '%s' in %s", name, what);
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
    if (s->pcfg && s->module->free_cfg)
        s->module->free_cfg(s->pcfg);
    free(s->name);
    free(s->listen);
    tls_service_free(s->tls);
}

static void config_free(struct config *c)
{
    for (size_t i = 0; i < c->nservices; i++)
        free_service(&c->services[i]);
    free(c->services);
    for (unsigned i = 1; c->sections && i <= module_count(); i++)
        if (c->sections[i] && module_at(i)->free_section)
            module_at(i)->free_section(c->sections[i]);
    free(c->sections);
    free(c->text);
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

void *config_section(const struct config *c, const struct module *m)
{
    unsigned id = module_id(m);
    return id && c->sections ? c->sections[id] : NULL;
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
        if (cfg_check_keys(ctx, g, "'log'", keys, NULL) < 0 ||
            cfg_string(ctx, g, "level", &level) < 0 || cfg_string(ctx, g, "error_log", &target) < 0)
            return -1;
        if (level && (c->log_level = log_level_parse(level)) < 0)
            return cfg_error(ctx, config_setting_get_member(g, "level"),
                             "'level' must be one of error, warn, info, debug");
    }
    c->error_log = strcmp(target, "stderr") == 0 ? strdup(target) : cfg_path(ctx, target);
    return c->error_log ? 0 : cfg_error(ctx, g, "out of memory");
}

int cfg_listen(struct cfg_ctx *ctx, const config_setting_t *l, struct listen_addr **out,
               size_t *nout)
{
    size_t n;
    if (config_setting_type(l) == CONFIG_TYPE_STRING)
        n = 1;
    else if (config_setting_is_array(l) || config_setting_is_list(l))
        n = (size_t)config_setting_length(l);
    else
        return cfg_error(ctx, l, "'listen' must be a string or a list of strings");
    if (n == 0)
        return cfg_error(ctx, l, "'listen' is empty");
    struct listen_addr *addrs = calloc(n, sizeof *addrs);
    if (!addrs)
        return cfg_error(ctx, l, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_type(l) == CONFIG_TYPE_STRING
                                        ? l
                                        : config_setting_get_elem(l, (unsigned)i);
        char msg[256];
        if (config_setting_type(e) != CONFIG_TYPE_STRING ||
            listen_addr_parse(config_setting_get_string(e), ctx->dir, &addrs[i], msg, sizeof msg) <
                0) {
            free(addrs);
            if (config_setting_type(e) != CONFIG_TYPE_STRING)
                return cfg_error(ctx, e, "'listen' entries must be strings");
            return cfg_error(ctx, e, "%s", msg);
        }
    }
    *out = addrs;
    *nout = n;
    return 0;
}

int cfg_listen_tls(struct cfg_ctx *ctx, const config_setting_t *setting, struct listen_addr **list,
                   size_t *n)
{
    struct listen_addr *t = NULL, *all;
    size_t nt = 0;
    if (cfg_listen(ctx, setting, &t, &nt) < 0)
        return -1;
    if (!(all = realloc(*list, (*n + nt) * sizeof *all))) {
        free(t);
        return cfg_error(ctx, setting, "out of memory");
    }
    for (size_t i = 0; i < nt; i++) {
        t[i].tls = 1;
        all[*n + i] = t[i];
    }
    free(t);
    *list = all;
    *n += nt;
    return 0;
}

static int parse_service(struct cfg_ctx *ctx, const struct module *m, config_setting_t *block,
                         struct service *svc)
{
    static const char *const common[] = {"name", "listen",           "tls_listen",
                                         "tls",  "max_conns_per_ip", NULL};
    svc->module = m;
    char what[64];
    snprintf(what, sizeof what, "a %s service", m->name);
    if (cfg_check_keys(ctx, block, what, common, m->keys) < 0)
        return -1;
    const char *name = NULL;
    if (cfg_string(ctx, block, "name", &name) < 0)
        return -1;
    if (!name || !*name)
        return cfg_error(ctx, block, "every %s service needs a non-empty 'name'", m->name);
    if (!(svc->name = strdup(name)))
        return cfg_error(ctx, block, "out of memory");
    long long per_ip = 0;
    if (cfg_int(ctx, block, "max_conns_per_ip", 0, 1000000, &per_ip) < 0)
        return -1;
    svc->max_conns_per_ip = (unsigned)per_ip;
    config_setting_t *l = config_setting_get_member(block, "listen"),
                     *tl = config_setting_get_member(block, "tls_listen"),
                     *tb = config_setting_get_member(block, "tls");
    if (!l && !tl)
        return cfg_error(ctx, block, "service '%s' needs 'listen' or 'tls_listen'", svc->name);
    if (l && cfg_listen(ctx, l, &svc->listen, &svc->nlisten) < 0)
        return -1;
    if (tl && cfg_listen_tls(ctx, tl, &svc->listen, &svc->nlisten) < 0)
        return -1;
    if (tl && !tb)
        return cfg_error(ctx, tl, "'tls_listen' needs a 'tls' block with the certificate");
    if (tb) {
        if (!tl && !(m->flags & MODULE_STARTTLS))
            return cfg_error(ctx, tb, "'tls' has no listener: add 'tls_listen'");
        if (cfg_tls(ctx, tb, svc->name, m->alpn, &svc->tls) < 0)
            return -1;
    }
    ctx->tls = svc->tls;
    int rc = m->parse(ctx, block, &svc->pcfg);
    ctx->tls = NULL;
    return rc;
}

/* The setting of a listener, for error messages about duplicates: the
 * i-th of `listen` then `tls_listen`. */
static const config_setting_t *listen_entry(config_setting_t *block, size_t i)
{
    config_setting_t *l = config_setting_get_member(block, "listen");
    size_t nl = !l                                             ? 0
                : config_setting_type(l) == CONFIG_TYPE_STRING ? 1
                                                               : (size_t)config_setting_length(l);
    if (i >= nl) {
        l = config_setting_get_member(block, "tls_listen");
        i -= nl;
    }
    return config_setting_type(l) == CONFIG_TYPE_STRING ? l
                                                        : config_setting_get_elem(l, (unsigned)i);
}

static int parse_services(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    size_t total = 0;
    for (unsigned p = 1; p <= module_count(); p++) {
        const struct module *m = module_at(p);
        config_setting_t *l = m->parse ? config_setting_get_member(root, m->name) : NULL;
        if (!l)
            continue;
        if (!config_setting_is_list(l))
            return cfg_error(ctx, l, "'%s' must be a list of services: ( { ... }, ... )", m->name);
        total += (size_t)config_setting_length(l);
    }
    c->services = calloc(total ? total : 1, sizeof *c->services);
    config_setting_t **blocks = calloc(total ? total : 1, sizeof *blocks);
    if (!c->services || !blocks) {
        free(blocks);
        return cfg_error(ctx, root, "out of memory");
    }
    int rc = 0;
    for (unsigned p = 1; p <= module_count() && rc == 0; p++) {
        const struct module *m = module_at(p);
        config_setting_t *l = m->parse ? config_setting_get_member(root, m->name) : NULL;
        for (int i = 0; l && i < config_setting_length(l) && rc == 0; i++) {
            config_setting_t *block = config_setting_get_elem(l, (unsigned)i);
            struct service *svc = &c->services[c->nservices++];
            blocks[c->nservices - 1] = block;
            rc = parse_service(ctx, m, block, svc);
        }
    }
    /* Names and addresses must be unique across every service. */
    for (size_t i = 0; i < c->nservices && rc == 0; i++) {
        for (size_t j = 0; j < i && rc == 0; j++)
            /* cfg_error() is always -1, and every 0 return has set the name (the analyzer sees one
             * file) */
            /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
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

/* Modules with a section of their own, after every service. */
static int parse_sections(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    if (!(c->sections = calloc(module_count() + 1, sizeof *c->sections)))
        return cfg_error(ctx, root, "out of memory");
    for (unsigned p = 1; p <= module_count(); p++) {
        const struct module *m = module_at(p);
        if (m->parse_section &&
            m->parse_section(ctx,
                             config_setting_get_member(root, m->section ? m->section : m->name), c,
                             &c->sections[p]) < 0)
            return -1;
    }
    return 0;
}

/* login_throttle = { slow_after; max_failures; window; block; } (throttle.h) */
static int parse_throttle(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    static const char *const keys[] = {"slow_after", "max_failures", "window", "block", NULL};
    long long slow = 5, max = 12, window = 600, block = 600;
    config_setting_t *g = config_setting_get_member(root, "login_throttle");
    if (g) {
        if (!config_setting_is_group(g))
            return cfg_error(ctx, g,
                             "'login_throttle' must be a group: { max_failures = 10; ... }");
        if (cfg_check_keys(ctx, g, "'login_throttle'", keys, NULL) < 0 ||
            cfg_int(ctx, g, "slow_after", 0, 100000, &slow) < 0 ||
            cfg_int(ctx, g, "max_failures", 0, 100000, &max) < 0 ||
            cfg_int(ctx, g, "window", 1, 30 * 86400, &window) < 0 ||
            cfg_int(ctx, g, "block", 1, 30 * 86400, &block) < 0)
            return -1;
        if (max && slow > max)
            return cfg_error(ctx, g, "'slow_after' (%lld) is more than 'max_failures' (%lld)", slow,
                             max);
    }
    c->login_throttle.slow_after = (unsigned)slow;
    c->login_throttle.max_failures = (unsigned)max;
    c->login_throttle.window_s = (unsigned)window;
    c->login_throttle.block_s = (unsigned)block;
    return 0;
}

static int parse_root(struct cfg_ctx *ctx, config_setting_t *root, struct config *c)
{
    static const char *const keys[] = {"workers",
                                       "user",
                                       "group",
                                       "log",
                                       "grace_period",
                                       "worker_connections",
                                       "backlog",
                                       "tls_ticket_rotate",
                                       "allow_root",
                                       "login_throttle",
                                       NULL};
    const char *module_keys[65] = {0};
    for (unsigned p = 1, k = 0; p <= module_count() && k < 63; p++) {
        module_keys[k++] = module_at(p)->name;
        if (module_at(p)->section)
            module_keys[k++] = module_at(p)->section;
    }
    if (cfg_check_keys(ctx, root, "the file", keys, module_keys) < 0 ||
        parse_workers(ctx, root, c) < 0 || parse_log(ctx, root, c) < 0)
        return -1;

    long long conns = 10000, backlog = 511, rotate = 3600;
    c->grace_ms = 10000;
    const char *user = NULL, *group = NULL;
    if (cfg_int(ctx, root, "worker_connections", 1, 1000000, &conns) < 0 ||
        cfg_int(ctx, root, "backlog", 1, 65535, &backlog) < 0 ||
        cfg_int(ctx, root, "tls_ticket_rotate", 1, 7 * 86400, &rotate) < 0 ||
        cfg_duration_ms(ctx, root, "grace_period", 3600, &c->grace_ms) < 0 ||
        cfg_string(ctx, root, "user", &user) < 0 || cfg_string(ctx, root, "group", &group) < 0)
        return -1;
    if (cfg_bool(ctx, root, "allow_root", &c->allow_root) < 0 || parse_throttle(ctx, root, c) < 0)
        return -1;
    c->worker_connections = (unsigned)conns;
    c->backlog = (int)backlog;
    c->tls_ticket_rotate = (unsigned)rotate;
    if ((user && !(c->user = strdup(user))) || (group && !(c->group = strdup(group))))
        return cfg_error(ctx, root, "out of memory");
    return parse_services(ctx, root, c) < 0 ? -1 : parse_sections(ctx, root, c);
}

/* libconfig's scanner (flex) calls exit() when it cannot read what it
 * opened: `@include "a-folder"` (or a name cut short by a NUL, which names
 * the folder itself) would end a running server on reload. So every
 * @include, in every file included, must name a regular file before
 * libconfig reads anything. 0, or -1 with FILE:LINE: message. */
static int check_includes(const char *file, const char *dir, int depth, char *err, size_t errlen)
{
    FILE *f = fopen(file, "re");
    if (!f)
        return 0; /* libconfig says why, with its own words */
    /* the whole file, NULs included */
    char *text = NULL;
    ssize_t n = 0;
    for (size_t cap = 0;;) {
        if ((size_t)n == cap) {
            char *grown = realloc(text, cap = cap ? 2 * cap : 4096);
            if (!grown)
                break;
            text = grown;
        }
        size_t got = fread(text + n, 1, cap - (size_t)n, f);
        if (!got)
            break;
        n += (ssize_t)got;
    }
    fclose(f);
    int rc = 0, ln = 1;
    /* libconfig's scanner: at a line's start, [ \t]*@include[ \t]+" then
     * the name up to the next ", over lines, with \\ and \" escaped */
    for (ssize_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0 && text[i - 1] != '\n')
            continue;
        if (i > 0)
            ln++;
        ssize_t j = i;
        while (j < n && (text[j] == ' ' || text[j] == '\t'))
            j++;
        if (j + 9 > n || memcmp(text + j, "@include", 8) != 0 ||
            (text[j + 8] != ' ' && text[j + 8] != '\t'))
            continue;
        j += 8;
        while (j < n && (text[j] == ' ' || text[j] == '\t'))
            j++;
        if (j >= n || text[j] != '"')
            continue;
        char name[PATH_MAX];
        size_t len = 0;
        int nul = 0, closed = 0;
        for (j++; j < n; j++) {
            char ch = text[j];
            if (ch == '"') {
                closed = 1;
                break;
            }
            if (ch == '\\' && j + 1 < n && (text[j + 1] == '\\' || text[j + 1] == '"'))
                ch = text[++j];
            else if (ch == '\\')
                continue;
            nul |= ch == '\0';
            if (len + 1 < sizeof name)
                name[len++] = ch;
        }
        name[len] = '\0';
        if (!closed)
            continue; /* libconfig reports the syntax */
        char full[PATH_MAX + 2];
        struct stat st;
        if (nul || len + 1 >= sizeof name) {
            snprintf(err, errlen, "%s:%d: @include: a NUL or an over-long name", file, ln);
            rc = -1;
            break;
        }
        snprintf(full, sizeof full, "%s%s%s", name[0] == '/' ? "" : dir, name[0] == '/' ? "" : "/",
                 name);
        if (stat(full, &st) < 0)
            continue; /* "cannot open include file": libconfig's message */
        if (!S_ISREG(st.st_mode)) {
            snprintf(err, errlen, "%s:%d: @include \"%s\" is not a regular file%s", file, ln, name,
                     S_ISDIR(st.st_mode) ? " (a folder: include each file by its name)" : "");
            rc = -1;
        } else if (depth >= 10) {
            snprintf(err, errlen, "%s:%d: @include nested more than 10 deep", file, ln);
            rc = -1;
        } else {
            rc = check_includes(full, dir, depth + 1, err, errlen);
        }
    }
    free(text);
    return rc;
}

/* libconfig says only "syntax error" and a line: add the line itself, the
 * token it stumbled on where that can be told, and a hint for the two
 * usual causes (nginx's "key value;" shape, and a bracket left open, which
 * libconfig reports at the end of the file). */
static void syntax_error(const char *file, int line, const char *what, char *err, size_t errlen)
{
    char text[160] = "";
    int found = 0, last = 0;
    FILE *f = fopen(file, "re");
    if (f) {
        char *l = NULL;
        size_t cap = 0;
        for (int n = 1; getline(&l, &cap, f) > 0; n++) {
            last = n;
            if (n == line) {
                l[strcspn(l, "\r\n")] = '\0';
                snprintf(text, sizeof text, "%s", l + strspn(l, " \t"));
                found = 1;
            }
        }
        free(l);
        fclose(f);
    }
    /* nginx style: a name, white space, then something that is not = or : */
    char key[64] = "", next[64] = "";
    int nginx = found && sscanf(text, "%63[A-Za-z0-9_] %63[^=:;{ ]", key, next) == 2 && key[0] &&
                !strchr("=:{", next[0]) && text[strlen(key)] == ' ';
    if (nginx)
        snprintf(err, errlen,
                 "%s:%d: %s near '%s'\n    %s\n    hint: medusa's configuration is libconfig: "
                 "write %s = %s;",
                 file, line, what, next, text, key, next);
    else if (found && text[0])
        snprintf(err, errlen, "%s:%d: %s in this line:\n    %s", file, line, what, text);
    else if (line >= last)
        snprintf(err, errlen,
                 "%s:%d: %s at the end of the file\n    hint: a '(', '[' or '{' above is "
                 "not closed, or a ';' is missing",
                 file, line, what);
    else
        snprintf(err, errlen, "%s:%d: %s", file, line, what);
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
    static _Atomic unsigned long loaded;
    c->generation = atomic_fetch_add(&loaded, 1) + 1;
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
    if (check_includes(path, c->dir, 0, err, errlen) < 0) {
        rc = -1;
    } else if (!config_read_file(&cf, path)) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "%s:0: cannot read: %s", path, strerror(errno));
        else
            syntax_error(config_error_file(&cf) ? config_error_file(&cf) : path,
                         config_error_line(&cf), config_error_text(&cf), err, errlen);
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
