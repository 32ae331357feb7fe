/*
 * The FTP module: configuration, sessions, the command reader, login
 * delays, drains and moves, the per-IP session limit and the figures.
 * See ftp.h for the shape of the module.
 *
 * The control connection is a core connection with a bufferevent. Commands
 * are read one line at a time; while a transfer runs only ABOR, STAT, NOOP
 * and QUIT are taken, and anything else waits in the input buffer until
 * the transfer ends (so a client that pipelines is served in order).
 *
 * Ending a session from inside a command would free it under the reader's
 * feet, so commands only mark it (s->quitting) and the reader ends it when
 * the command returns (ftp_settle).
 */
#include "protocols/ftp/ftp.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "core/stats.h"
#include "core/tls.h"
#include "core/worker.h"
#include "protocols/ftp/ftp_impl.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* A client that does not read its replies is dropped past this. */
#define FTP_MAX_OUTPUT (1u << 20)

static const char *const counter_names[FTP_NCOUNTERS] = {
    "sessions_active", "sessions", "logins",    "login_failures", "downloads", "uploads",
    "listings",        "aborted",  "bytes_out", "bytes_in",       "refused"};
static struct {
    _Atomic uint64_t n[FTP_NCOUNTERS];
} __attribute__((aligned(64))) counters[BUS_MAX_WORKERS + 1];

void ftp_count(struct ftp_session *s, int which, uint64_t n)
{
    stat_add(&counters[s->c->w->id].n[which], n);
}

/* ---- sessions per client address ----
 * Every worker's sessions count against one limit (core/iplimit.h), in a
 * scope of their own beside the core's connection cap on the service. */
/* The slot; -1: not counted (a Unix socket); -2: at the limit. */
static int ip_acquire(const struct conn *c, unsigned max)
{
    char host[64];
    conn_peer_host(c, host, sizeof host);
    if (strncmp(host, "unix:", 5) == 0)
        return -1;
    int slot = iplimit_acquire(IPLIMIT_FTP_SESSIONS, c->svc->name, host, max);
    return slot < 0 ? -2 : slot;
}

/* ---- configuration ---- */

static const char *const ftp_keys[] = {"root",
                                       "anonymous",
                                       "anonymous_upload",
                                       "users",
                                       "passive_ports",
                                       "passive_address",
                                       "allow_foreign_data",
                                       "allow_low_ports",
                                       "max_login_failures",
                                       "login_failure_delay",
                                       "max_sessions_per_ip",
                                       "idle_timeout",
                                       "data_timeout",
                                       "banner",
                                       "transfer_log",
                                       "tls_required",
                                       "tls_session_reuse",
                                       NULL};

static void ftp_free_cfg(void *p)
{
    struct ftp_cfg *f = p;
    if (!f)
        return;
    free(f->name);
    free(f->root);
    free(f->anon_upload);
    users_free(&f->users);
    free(f->pasv_address);
    free(f->banner);
    free(f->xferlog);
    if (f->xferlog_fd >= 0)
        close(f->xferlog_fd);
    free(f);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int parse_passive_ports(struct cfg_ctx *ctx, const config_setting_t *block,
                               struct ftp_cfg *f)
{
    const config_setting_t *pp = config_setting_get_member(block, "passive_ports");
    if (!pp)
        return 0;
    if (!config_setting_is_array(pp) || config_setting_length(pp) != 2 ||
        config_setting_type(config_setting_get_elem(pp, 0)) != CONFIG_TYPE_INT ||
        config_setting_type(config_setting_get_elem(pp, 1)) != CONFIG_TYPE_INT)
        return cfg_error(ctx, pp, "'passive_ports' is [ FIRST, LAST ], two port numbers");
    int lo = config_setting_get_int_elem(pp, 0), hi = config_setting_get_int_elem(pp, 1);
    if (lo < 1024 || hi > 65535 || lo > hi)
        return cfg_error(ctx, pp, "'passive_ports' must satisfy 1024 <= FIRST <= LAST <= 65535");
    f->pasv_min = (unsigned)lo;
    f->pasv_max = (unsigned)hi;
    return 0;
}

static int ftp_parse(struct cfg_ctx *ctx, const config_setting_t *block, void **out)
{
    struct ftp_cfg *f = calloc(1, sizeof *f);
    *out = f; /* the caller frees it, on failure too */
    if (!f)
        return cfg_error(ctx, block, "out of memory");
    f->xferlog_fd = -1;
    f->max_login_failures = 3;
    f->login_delay_ms = 1000;
    f->max_per_ip = 50;
    f->idle_ms = 300000;
    f->data_ms = 60000;
    f->tls_reuse = 1;
    const char *root = NULL, *upload = NULL, *users = NULL, *addr = NULL,
               *banner = "medusa FTP server ready.", *xferlog = NULL;
    long long failures = f->max_login_failures, per_ip = f->max_per_ip;
    const char *name = "ftp";
    config_setting_lookup_string(block, "name", &name);
    if (!(f->name = strdup(name)))
        return cfg_error(ctx, block, "out of memory");
    if (cfg_string(ctx, block, "root", &root) < 0 ||
        cfg_bool(ctx, block, "anonymous", &f->anonymous) < 0 ||
        cfg_string(ctx, block, "anonymous_upload", &upload) < 0 ||
        cfg_string(ctx, block, "users", &users) < 0 || parse_passive_ports(ctx, block, f) < 0 ||
        cfg_string(ctx, block, "passive_address", &addr) < 0 ||
        cfg_bool(ctx, block, "allow_foreign_data", &f->allow_foreign_data) < 0 ||
        cfg_bool(ctx, block, "allow_low_ports", &f->allow_low_ports) < 0 ||
        cfg_int(ctx, block, "max_login_failures", 1, 100, &failures) < 0 ||
        cfg_duration_ms(ctx, block, "login_failure_delay", 60, &f->login_delay_ms) < 0 ||
        cfg_int(ctx, block, "max_sessions_per_ip", 0, 100000, &per_ip) < 0 ||
        cfg_duration_ms(ctx, block, "idle_timeout", 86400, &f->idle_ms) < 0 ||
        cfg_duration_ms(ctx, block, "data_timeout", 86400, &f->data_ms) < 0 ||
        cfg_string(ctx, block, "banner", &banner) < 0 ||
        cfg_string(ctx, block, "transfer_log", &xferlog) < 0 ||
        cfg_bool(ctx, block, "tls_required", &f->tls_required) < 0 ||
        cfg_bool(ctx, block, "tls_session_reuse", &f->tls_reuse) < 0)
        return -1;
    if (f->tls_required && !ctx->tls)
        return cfg_error(ctx, config_setting_get_member(block, "tls_required"),
                         "'tls_required' needs a 'tls' block with the certificate");
    f->max_login_failures = (unsigned)failures;
    f->max_per_ip = (unsigned)per_ip;
    if (!root)
        return cfg_error(ctx, block, "an ftp service needs 'root', the folder it serves");
    if (!(f->root = cfg_path(ctx, root)))
        return cfg_error(ctx, block, "out of memory");
    if (!is_dir(f->root))
        return cfg_error(ctx, config_setting_get_member(block, "root"), "root %s is not a folder",
                         f->root);
    if (strpbrk(banner, "\r\n"))
        return cfg_error(ctx, config_setting_get_member(block, "banner"),
                         "'banner' must be one line");
    if (!(f->banner = strdup(banner)))
        return cfg_error(ctx, block, "out of memory");
    if (upload) {
        char v[FTP_MAX_PATH];
        if (ftp_vpath("/", upload, v, sizeof v) < 0 || strcmp(v, "/") == 0)
            return cfg_error(ctx, config_setting_get_member(block, "anonymous_upload"),
                             "'anonymous_upload' must name a folder under root");
        char *real = malloc(strlen(f->root) + strlen(v) + 1);
        if (!real || !(f->anon_upload = strdup(v))) {
            free(real);
            return cfg_error(ctx, block, "out of memory");
        }
        sprintf(real, "%s%s", f->root, v);
        int ok = is_dir(real);
        free(real);
        if (!ok)
            return cfg_error(ctx, config_setting_get_member(block, "anonymous_upload"),
                             "anonymous_upload %s is not a folder under root", v);
    }
    if (addr) {
        if (inet_pton(AF_INET, addr, &f->pasv_in) != 1)
            return cfg_error(ctx, config_setting_get_member(block, "passive_address"),
                             "'passive_address' must be a numeric IPv4 address");
        if (!(f->pasv_address = strdup(addr)))
            return cfg_error(ctx, block, "out of memory");
    }
    if (users) {
        char *path = cfg_path(ctx, users);
        if (!path)
            return cfg_error(ctx, block, "out of memory");
        int rc = users_load(ctx, config_setting_get_member(block, "users"), path, &f->users);
        free(path);
        if (rc < 0)
            return -1;
        f->have_users = 1;
        for (size_t i = 0; i < f->users.n; i++)
            if (f->users.v[i].home && !is_dir(f->users.v[i].home))
                return cfg_error(ctx, config_setting_get_member(block, "users"),
                                 "home %s of user '%s' is not a folder", f->users.v[i].home,
                                 f->users.v[i].name);
    }
    if (xferlog) {
        if (!(f->xferlog = cfg_path(ctx, xferlog)))
            return cfg_error(ctx, block, "out of memory");
        if ((f->xferlog_fd = log_file_open(f->xferlog)) < 0)
            return cfg_error(ctx, config_setting_get_member(block, "transfer_log"),
                             "cannot open transfer log %s: %s", f->xferlog, strerror(errno));
    }
    return 0;
}

static int ftp_reopen(void *pcfg)
{
    struct ftp_cfg *f = pcfg;
    if (f->xferlog_fd < 0)
        return 0;
    if (log_file_reopen(f->xferlog, f->xferlog_fd) < 0) {
        log_error(f->name, "reopening transfer log %s: %s", f->xferlog, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- replies ---- */

void ftp_send(struct ftp_session *s, const char *text, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(s->c->bev);
    if (s->c->closing)
        return;
    if (evbuffer_get_length(out) + len > FTP_MAX_OUTPUT) {
        if (!s->quitting)
            log_warn(s->c->peer, "ftp: the client does not read its replies; closing");
        s->quitting = 1;
        return;
    }
    evbuffer_add(out, text, len);
}

void ftp_reply(struct ftp_session *s, int code, const char *fmt, ...)
{
    char line[FTP_MAX_PATH + 256];
    int n = snprintf(line, sizeof line, "%03d ", code);
    size_t cap = sizeof line - (size_t)n - 2; /* room for CR LF */
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, cap, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m < cap ? (size_t)m : cap - 1);
    /* A name can carry no line break into a reply. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\r' || line[i] == '\n')
            line[i] = ' ';
    line[len++] = '\r';
    line[len++] = '\n';
    ftp_send(s, line, len);
}

void ftp_idle_timeout(struct ftp_session *s, int on)
{
    struct timeval tv = ftp_tv(s->cfg->idle_ms);
    bufferevent_set_timeouts(s->c->bev, on && s->cfg->idle_ms ? &tv : NULL, NULL);
}

/* ---- the command reader ---- */

static void process_input(struct ftp_session *s);
static void move_session(struct ftp_session *s);

static int busy(const struct ftp_session *s)
{
    return s->data && s->data->kind != X_NONE;
}

/* After a command or an event: end, move or go on reading. The session
 * may be gone afterwards. */
static void ftp_settle(struct ftp_session *s)
{
    struct conn *c = s->c;
    if ((s->quitting || s->stopping) && s->timer && !s->delayed)
        event_del(s->timer); /* the drain's grace: nothing left for it to do */
    if (s->quitting) {
        ftp_data_close(s, "the session ended");
        conn_close_after_flush(c, 2000);
        return;
    }
    if (s->delayed || busy(s))
        return;
    if (s->stopping) {
        ftp_data_close(s, "the server stopped");
        ftp_reply(s, 421, "Service not available: %s.",
                  c->w->leaving ? "this worker is leaving, and a TLS session cannot move to "
                                  "another: please reconnect"
                                : "the server is shutting down");
        conn_close_after_flush(c, 2000);
        return;
    }
    if (s->moving && !s->data) {
        move_session(s);
        return;
    }
}

void ftp_quit_if_pending(struct ftp_session *s)
{
    if (!s->quit_pending)
        return;
    s->quit_pending = 0;
    ftp_reply(s, 221, "Goodbye.");
    s->quitting = 1;
}

void ftp_transfer_done(struct ftp_session *s)
{
    ftp_idle_timeout(s, 1);
    if (s->timer && !s->delayed)
        event_del(s->timer);
    ftp_quit_if_pending(s);
    /* Inside a command (a transfer that failed as it started), the reader
     * goes on, ends or moves the session when the command returns. */
    if (s->in_command)
        return;
    if (s->quitting || s->stopping || s->moving) {
        ftp_settle(s);
        return;
    }
    process_input(s);
}

/* Once per over-long line, however many reads it spans (conn_next_line). */
static void refuse_long_line(struct ftp_session *s)
{
    ftp_reply(s, 500, "Command line too long (over %d bytes).", FTP_MAX_LINE);
    log_info(s->c->peer, "ftp: over-long command line refused");
    conn_count_error(s->c);
}

static void read_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

/* AUTH TLS was answered 234: the control connection turns to TLS (the
 * core drops anything the client pipelined behind AUTH). */
static void start_tls(struct ftp_session *s)
{
    s->starttls = 0;
    if (conn_starttls(s->c) < 0) {
        conn_close(s->c);
        return;
    }
    s->tls_handshaking = 1;
    bufferevent_setcb(s->c->bev, read_cb, NULL, event_cb, s);
    bufferevent_setwatermark(s->c->bev, EV_READ, 0, 4 * FTP_MAX_LINE);
    /* the handshake has the login's idle timeout */
    ftp_idle_timeout(s, 1);
    bufferevent_enable(s->c->bev, EV_READ | EV_WRITE);
}

static void process_input(struct ftp_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->c->bev);
    char line[FTP_MAX_LINE + 1];
    while (!s->quitting && !s->c->closing && !s->delayed) {
        size_t len, skip;
        unsigned discarding = s->discarding;
        enum conn_line got = conn_next_line(in, FTP_MAX_LINE, &discarding, &len, &skip);
        s->discarding = discarding & 1;
        if (got == CONN_LINE_TOO_LONG) {
            refuse_long_line(s);
            continue;
        }
        if (got == CONN_LINE_NONE)
            break;
        evbuffer_copyout(in, line, len);
        len = ftp_strip_telnet(line, len);
        if (busy(s) && !ftp_command_during_transfer(line, len))
            break; /* after the transfer */
        evbuffer_drain(in, skip);
        if (memchr(line, '\r', len) || memchr(line, '\0', len)) {
            /* A CR ends a line only before LF (RFC 959's Telnet end of
             * line); a lone one, or a NUL, is not part of any command. */
            ftp_reply(s, 500, "Syntax error: a CR without its LF, or a NUL, in the command.");
            log_info(s->c->peer, "ftp: command with a bare CR or a NUL refused");
            conn_count_error(s->c);
            continue;
        }
        s->in_command++;
        ftp_command(s, line, len);
        s->in_command--;
        if (s->starttls) {
            start_tls(s);
            return;
        }
    }
    ftp_settle(s);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process_input(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct ftp_session *s = arg;
    if (what & BEV_EVENT_CONNECTED) { /* AUTH TLS: the handshake is done */
        s->tls_handshaking = 0;
        tls_count_done(s->c->ssl);
        log_debug(s->c->peer, "ftp: control connection now in TLS");
        return;
    }
    if (s->tls_handshaking) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        const char *why = e ? ERR_reason_error_string(e) : NULL;
        tls_count_failed(s->c->ssl, s->c->peer,
                         why                          ? why
                         : (what & BEV_EVENT_TIMEOUT) ? "timed out"
                         : (what & BEV_EVENT_EOF)     ? "the client closed"
                                                      : "connection error");
        conn_close(s->c);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        log_info(s->c->peer, "ftp: idle timeout");
        ftp_reply(s, 421, "Timeout: closing the control connection.");
        s->quitting = 1;
        ftp_settle(s);
        return;
    }
    if (what & BEV_EVENT_ERROR)
        conn_count_error(s->c);
    conn_close(s->c);
}

/* ---- login delays and the drain's grace ---- */

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ftp_session *s = arg;
    if (s->delayed) {
        s->delayed = 0;
        ftp_reply(s, 530, "Login incorrect.");
        if (s->failures >= s->cfg->max_login_failures) {
            log_warn(s->c->peer, "ftp: %u failed logins; closing", s->failures);
            ftp_reply(s, 421, "Too many failed logins: closing the control connection.");
            s->quitting = 1;
            ftp_settle(s);
            return;
        }
        bufferevent_enable(s->c->bev, EV_READ);
        process_input(s);
        return;
    }
    /* The drain's grace is nearly over and a transfer still runs: end it
     * and say so, then the session moves or ends (ftp_settle). */
    if (busy(s)) {
        ftp_count(s, FTP_ABORTED, 1);
        ftp_data_close(s, "the worker is leaving");
        ftp_reply(s, 426, "Transfer aborted: %s.",
                  !s->stopping       ? "the server is moving this session to another worker"
                  : s->c->w->leaving ? "this worker is leaving (a TLS session cannot move)"
                                     : "the server is shutting down");
        ftp_quit_if_pending(s);
    } else if (s->data) {
        ftp_data_close(s, NULL);
    }
    ftp_idle_timeout(s, 1);
    ftp_settle(s);
}

static int ensure_timer(struct ftp_session *s)
{
    if (!s->timer)
        s->timer = evtimer_new(s->c->w->base, timer_cb, s);
    return s->timer ? 0 : -1;
}

void ftp_login_failed(struct ftp_session *s)
{
    ftp_count(s, FTP_LOGIN_FAILURES, 1);
    s->failures++;
    if (ensure_timer(s) < 0) {
        s->quitting = 1;
        return;
    }
    s->delayed = 1;
    bufferevent_disable(s->c->bev, EV_READ);
    struct timeval tv = ftp_tv(s->cfg->login_delay_ms);
    event_add(s->timer, &tv);
}

/* ---- sessions ---- */

static void session_free(struct ftp_session *s)
{
    if (s->timer)
        event_free(s->timer);
    if (s->rootfd >= 0)
        close(s->rootfd);
    iplimit_release(s->ip_slot);
    free(s->user);
    free(s->cwd);
    free(s->rnfr);
    free(s);
}

static void session_start(struct ftp_worker *fw, struct conn *c, struct ftp_session *s)
{
    s->c = c;
    s->fw = fw;
    s->cfg = c->svc->pcfg;
    c->ctx = s;
    ftp_count(s, FTP_ACTIVE, 1);
    /* ABOR sent with MSG_OOB (ftplib does) keeps its last byte in the stream. */
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof one);
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, s);
    /* Reading pauses when this much input waits (a client that pipelines
     * commands during a transfer): bounded memory. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, 4 * FTP_MAX_LINE);
    ftp_idle_timeout(s, 1);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void ftp_accept(void *state, struct conn *c)
{
    struct ftp_worker *fw = state;
    const struct ftp_cfg *f = c->svc->pcfg;
    struct ftp_session *s = calloc(1, sizeof *s);
    if (!s || !(s->cwd = strdup("/"))) {
        free(s);
        log_error(c->peer, "ftp: out of memory");
        conn_close(c);
        return;
    }
    s->rootfd = -1;
    s->type_ascii = 1;
    s->mlst_facts = FACT_ALL;
    s->ip_slot = -1;
    session_start(fw, c, s);
    ftp_count(s, FTP_SESSIONS, 1);
    if (f->max_per_ip) {
        int slot = ip_acquire(c, f->max_per_ip);
        if (slot == -2) {
            ftp_count(s, FTP_REFUSED, 1);
            log_warn(c->peer, "ftp: refused: already %u sessions from this address", f->max_per_ip);
            ftp_reply(s, 421, "Too many sessions from your address.");
            s->quitting = 1;
            ftp_settle(s);
            return;
        }
        s->ip_slot = slot;
    }
    ftp_reply(s, 220, "%s", f->banner);
}

static void ftp_closed(void *state, struct conn *c)
{
    (void)state;
    struct ftp_session *s = c->ctx;
    if (!s)
        return;
    ftp_data_close(s, "the control connection closed");
    stat_sub(&counters[c->w->id].n[FTP_ACTIVE], 1);
    if (s->state == FTP_LOGGED)
        log_info(c->peer, "ftp: %s logged out after %lld s", s->user,
                 (long long)(time(NULL) - s->login_time));
    c->ctx = NULL;
    session_free(s);
}

/* The session itself travels: the receiving worker gives it its new
 * connection and worker; its pointers into the configuration stay valid
 * because the connection keeps its snapshot. */
static void move_free(void *blob)
{
    session_free(blob);
}

static void move_session(struct ftp_session *s)
{
    struct conn *c = s->c;
    stat_sub(&counters[c->w->id].n[FTP_ACTIVE], 1);
    if (s->timer) {
        event_free(s->timer);
        s->timer = NULL;
    }
    s->moving = 0;
    s->c = NULL;
    s->fw = NULL;
    c->ctx = NULL;
    conn_move(c, s, move_free);
}

static void ftp_adopt(void *state, struct conn *c, void *blob)
{
    struct ftp_session *s = blob;
    session_start(state, c, s);
    process_input(s); /* what it sent while it moved */
}

static void ftp_drain(void *state, struct conn *c, unsigned grace_ms, int move)
{
    (void)state;
    struct ftp_session *s = c->ctx;
    if (!s || c->closing || s->quitting)
        return;
    if (move)
        s->moving = 1;
    else
        s->stopping = 1, s->moving = 0;
    if (s->data || s->delayed) {
        /* Let it finish, but not past the grace: keep a margin to say so. */
        if (ensure_timer(s) == 0 && !s->delayed) {
            unsigned ms = grace_ms > 1000 ? grace_ms - grace_ms / 5 : grace_ms / 2;
            struct timeval tv = ftp_tv(ms);
            event_add(s->timer, &tv);
        }
        return;
    }
    ftp_settle(s);
}

static void ftp_describe(void *state, struct conn *c, char *buf, size_t len)
{
    (void)state;
    const struct ftp_session *s = c->ctx;
    if (!s) {
        snprintf(buf, len, "moving");
        return;
    }
    if (s->state != FTP_LOGGED) {
        snprintf(buf, len, "logging in%s%.64s", s->user ? " as " : "", s->user ? s->user : "");
        return;
    }
    int n = snprintf(buf, len, "user %.64s in %.200s", s->user, s->cwd);
    if (n > 0 && (size_t)n < len && s->data)
        ftp_data_describe(s, buf + n, len - (size_t)n);
}

static void *ftp_worker_init(struct worker *w)
{
    struct ftp_worker *fw = calloc(1, sizeof *fw);
    if (!fw)
        return NULL;
    fw->w = w;
    unsigned r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
        r = (unsigned)w->id * 7919u;
    fw->next_port = r; /* workers start their passive port searches apart */
    /* Others may be reading the slot (the status page): an atomic store. */
    atomic_store_explicit(&counters[w->id].n[FTP_ACTIVE], 0, memory_order_relaxed);
    return fw;
}

static void ftp_worker_dispose(void *state)
{
    struct ftp_worker *fw = state;
    if (fw->cd) {
        explicit_bzero(fw->cd, sizeof *fw->cd);
        free(fw->cd);
    }
    free(fw);
}

static void ftp_stats(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb)
{
    (void)cfg;
    uint64_t n[FTP_NCOUNTERS] = {0};
    for (int w = 1; w <= bus_max_worker(); w++)
        for (int i = 0; i < FTP_NCOUNTERS; i++)
            n[i] += stat_get(&counters[w].n[i]);
    stats_counters(sb, fmt, "ftp", counter_names, n, FTP_NCOUNTERS);
}

const struct module ftp_module = {
    .name = "ftp",
    .flags = MODULE_TCP_NODELAY | MODULE_STARTTLS,
    .busy_reply = "421 Too many connections from your address.\r\n",
    .keys = ftp_keys,
    .parse = ftp_parse,
    .free_cfg = ftp_free_cfg,
    .worker_init = ftp_worker_init,
    .worker_dispose = ftp_worker_dispose,
    .accept = ftp_accept,
    .adopt = ftp_adopt,
    .closed = ftp_closed,
    .drain = ftp_drain,
    .describe = ftp_describe,
    .reopen = ftp_reopen,
    .stats = ftp_stats,
};
