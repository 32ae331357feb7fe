/*
 * The configuration: an immutable, reference-counted snapshot built from a
 * libconfig file.
 *
 * config_load() builds and fully validates a snapshot on the supervisor; a
 * snapshot is never changed afterwards, so any thread may read it while it
 * holds a reference. The last config_unref(), on whichever thread, frees it:
 * a snapshot holds nothing mutable and nothing that belongs to one worker
 * (modules keep per-worker state in their worker state, core/module.h).
 *
 * Errors come back as "FILE:LINE: message". Unknown keys, wrong types and
 * out-of-range values are errors; nothing is silently ignored.
 */
#pragma once

#include "core/listener.h"

#include <libconfig.h>
#include <stdatomic.h>
#include <stddef.h>

struct module;
struct tls_service;

struct service {
    const struct module *module;
    char *name;
    struct listen_addr *listen; /* `listen`, then `tls_listen` (tls set) */
    size_t nlisten;
    struct tls_service *tls;   /* the service's `tls` block, or NULL */
    unsigned max_conns_per_ip; /* per client address, across workers; 0: no cap */
    void *pcfg;                /* the module's own configuration */
};

struct config {
    _Atomic int refs;
    unsigned long generation;    /* snapshots loaded by this process so far, for logs */
    char *path;                  /* as given */
    char *dir;                   /* folder relative paths are resolved against */
    int workers;                 /* resolved: "auto" became the online CPU count */
    unsigned grace_ms;           /* graceful stop: how long sessions may finish */
    unsigned worker_connections; /* per worker; accept pauses at this many */
    unsigned tls_ticket_rotate;  /* seconds between new TLS ticket keys */
    int backlog;
    int log_level;
    char *error_log; /* "stderr" or an absolute path */
    char *user, *group;
    int allow_root; /* may serve as root when no user is set */
    struct {        /* login_throttle = { ... } (core/throttle.h) */
        unsigned slow_after, max_failures, window_s, block_s;
    } login_throttle;
    struct service *services;
    size_t nservices;
    void **sections; /* [module id]: what the module's parse_section made */
    char *text;      /* the file as it was loaded */
};

#define CONFIG_ERR_MAX 512

struct config *config_load(const char *path, char *err, size_t errlen);
struct config *config_ref(struct config *c);
void config_unref(struct config *c);
const struct service *config_service(const struct config *c, const char *name);
/* A module's own section (parse_section's result), or NULL. */
void *config_section(const struct config *c, const struct module *m);

/* Helpers for modules' parse callbacks. Each returns 0, or -1 with the
 * error (file:line: message) recorded in ctx. A missing key leaves *out as
 * it was, so callers set defaults first. */
struct cfg_ctx {
    const char *file;
    const char *dir;
    char *err;
    size_t errlen;
    /* while a service's parse() runs: its `tls` (or NULL), to which
     * virtual hosts add their certificates (cfg_tls_sni) */
    struct tls_service *tls;
};

int cfg_error(struct cfg_ctx *ctx, const config_setting_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* group must be a group whose every key is in keys or more (either may be
 * NULL); what names the group in the error ("virtual host"). */
int cfg_check_keys(struct cfg_ctx *ctx, const config_setting_t *group, const char *what,
                   const char *const *keys, const char *const *more);
/* A listen setting: one address string or a list of them (listener.h
 * forms); *out is allocated. */
int cfg_listen(struct cfg_ctx *ctx, const config_setting_t *l, struct listen_addr **out,
               size_t *nout);
/* A tls_listen setting: its addresses, marked tls, appended to *list. */
int cfg_listen_tls(struct cfg_ctx *ctx, const config_setting_t *setting, struct listen_addr **list,
                   size_t *n);
int cfg_int(struct cfg_ctx *ctx, const config_setting_t *group, const char *key, long long min,
            long long max, long long *out);
/* Seconds, integer or fractional, returned in milliseconds. */
int cfg_duration_ms(struct cfg_ctx *ctx, const config_setting_t *group, const char *key,
                    unsigned max_s, unsigned *out_ms);
/* Returns a pointer into the configuration (valid while it is parsed). */
int cfg_string(struct cfg_ctx *ctx, const config_setting_t *group, const char *key,
               const char **out);
int cfg_bool(struct cfg_ctx *ctx, const config_setting_t *group, const char *key, int *out);
/* A newly allocated path, relative ones resolved against the config folder. */
char *cfg_path(const struct cfg_ctx *ctx, const char *path);
