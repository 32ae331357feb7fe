/*
 * The reverse proxy: upstream groups (configuration `upstreams`), the
 * `proxy` handler, per-worker keep-alive pools and upstream health.
 *
 *   upstream_conf.c  parsing upstreams and proxy handlers; the registry of
 *                    server records that outlive reloads (figures, health)
 *   pool.c           per worker: servers' state, balancing, connecting,
 *                    the keep-alive pools, passive health, DNS (evdns)
 *   proxy.c          the handler: forwarding a request, streaming the
 *                    response back, WebSocket tunnels
 *   upstream_sup.c   the supervisor: the servers' health as everyone
 *                    should see it, active checks, the console commands
 *                    and the figures
 *
 * Ownership (DESIGN.md §1). An upstream connection belongs to one worker for
 * its whole life: in that worker's pool, or serving one request of one of
 * its client connections. What a worker learns about a server's health it
 * tells the supervisor through the bus, and the supervisor tells every
 * worker; each worker keeps its own copy. The only shared memory is the
 * records' single-writer counters.
 */
#pragma once

#include "core/bus.h"
#include "core/list.h"
#include "core/sbuf.h"

#include <libconfig.h>
#include <llhttp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

struct cfg_ctx;
struct config;
struct http_req;
struct worker;
struct supervisor;

/* Why the last request or check to a server failed. */
enum px_err {
    PXE_NONE,
    PXE_REFUSED,
    PXE_CONNECT,
    PXE_CONNECT_TIMEOUT,
    PXE_SEND_TIMEOUT,
    PXE_READ_TIMEOUT,
    PXE_RESET,
    PXE_BAD_RESPONSE,
    PXE_DNS,
    PXE_CHECK_STATUS,
    PXE_COUNT
};
const char *px_err_text(enum px_err e);

/* One worker's figures for one server (single writer: that worker). */
struct px_slot {
    _Atomic uint64_t active, idle, requests, failures, last_err, last_err_ms;
} __attribute__((aligned(64)));

/* A server of an upstream, as figures and health know it: made the first
 * time a configuration names it, kept for the life of the process (so
 * figures and health survive reloads), found again by name. */
struct px_rec {
    struct px_rec *next;
    unsigned id; /* index for messages and per-worker tables */
    char *upstream, *server;
    struct px_slot slots[BUS_MAX_WORKERS + 1];
};
struct px_rec *px_rec_for(const char *upstream, const char *server);
struct px_rec *px_rec_by_id(unsigned id);
unsigned px_rec_count(void);

enum px_kind { PX_INET, PX_UNIX, PX_NAME };
enum px_balance { PX_ROUND_ROBIN, PX_LEAST_CONN };

struct px_server {
    char *text; /* as configured */
    enum px_kind kind;
    struct sockaddr_storage ss; /* PX_INET, PX_UNIX */
    socklen_t sslen;
    char *host; /* PX_NAME */
    uint16_t port;
    unsigned weight;
    struct px_rec *rec;
};

struct px_upstream {
    char *name;
    struct px_server *servers;
    size_t nservers;
    enum px_balance balance;
    unsigned keepalive;          /* idle connections kept per server, per worker */
    unsigned keepalive_ms;       /* how long one may stay idle */
    unsigned keepalive_requests; /* requests per upstream connection */
    unsigned connect_ms, send_ms, read_ms;
    unsigned max_fails, fail_ms; /* passive health */
    unsigned tries;              /* servers tried for one request */
    unsigned check_ms;           /* active checks: interval (0: none) */
    unsigned check_timeout_ms;
    int check_status;
    char *check_path;
    char *resolver; /* "IP[:PORT]", or NULL for /etc/resolv.conf */
};

struct px_section {
    struct px_upstream *ups;
    size_t nups;
};

/* A proxy handler's configuration (struct http_handler.conf). */
struct px_handler {
    char *upstream_name;
    const struct px_upstream *up; /* resolved when the section is parsed */
    int line;                     /* of the handler, for that error */
    int strip_prefix;
    char *host;              /* Host sent upstream; NULL: the client's */
    unsigned tunnel_idle_ms; /* WebSocket: closed after this long quiet */
};

/* upstream_conf.c: the HTTP module's section hooks (`upstreams`). */
int px_parse_section(struct cfg_ctx *ctx, const config_setting_t *list, const struct config *c,
                     void **section);
void px_free_section(void *section);
const struct px_upstream *px_find(const struct px_section *s, const char *name);
/* "unix:/path", "[v6]:port", "a.b.c.d:port" or "name:port": 0, or -1 */
int px_server_parse(const char *text, const char *base_dir, struct px_server *out, char *err,
                    size_t errlen);

/* dns.c: one evdns base per resolver setting (NULL: /etc/resolv.conf), on
 * one thread's loop. px_dns_free with fail_requests runs the callbacks of
 * queries in flight (DNS_ERR_SHUTDOWN). */
struct event_base;
struct evdns_base;
struct px_dns {
    struct {
        char *resolver;
        struct evdns_base *base;
    } v[8];
    unsigned n;
};
struct evdns_base *px_dns_get(struct px_dns *d, struct event_base *base, const char *resolver);
void px_dns_free(struct px_dns *d, int fail_requests);

/* ---- messages (module http, bus) ---- */
enum px_msg {
    PXM_DOWN = 100, /* worker -> supervisor: a = record; b = fail_timeout ms */
    PXM_STATE,      /* supervisor -> workers: a = record; b = PXS_* | ms << 8 */
    PXM_SYNC,       /* worker -> supervisor: send me every server's state */
};
#define PXS_UP 0
#define PXS_DOWN 1     /* for b >> 8 ms, or until a check succeeds when 0 */
#define PXS_DISABLED 2 /* drained by the operator */
#define PXS_ENABLED 3

/* ---- pool.c: per worker ---- */
struct px_worker;
struct px_uconn;
struct px_worker *px_worker_new(struct worker *w);
void px_worker_free(struct px_worker *pw);
void px_worker_message(struct px_worker *pw, struct msg *m);

/* What a connection attempt or request tells pool.c. */
void px_note_failure(struct px_worker *pw, struct px_rec *rec, const struct px_upstream *up,
                     enum px_err e);
void px_note_success(struct px_worker *pw, struct px_rec *rec);

/* ---- upstream_sup.c: supervisor ---- */
struct px_sup;
struct px_sup *px_sup_new(struct supervisor *s, const struct config *cfg);
void px_sup_config(struct px_sup *ps, const struct config *cfg);
void px_sup_free(struct px_sup *ps);
void px_sup_message(struct px_sup *ps, struct msg *m);
int px_cmd_upstreams(struct px_sup *ps, int argc, char **argv, struct sbuf *out);
int px_cmd_upstream(struct px_sup *ps, int argc, char **argv, struct sbuf *out);
/* The figures (any thread): lines for people, a JSON array, Prometheus
 * families, or the status page's HTML table. */
enum px_format { PXF_TEXT, PXF_JSON, PXF_PROM, PXF_HTML };
void px_stats(const struct config *cfg, enum px_format fmt, struct sbuf *sb);
