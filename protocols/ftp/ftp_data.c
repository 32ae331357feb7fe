/*
 * FTP data channels, ABOR and the transfer log.
 *
 * A channel is made by PASV/EPSV (a listening socket on a port from the
 * configured range, or one the kernel picks) or PORT/EPRT (an address to
 * connect to when the transfer starts), and serves one transfer. Passive
 * connections are taken only from the control connection's peer address
 * (others are closed and logged, and the channel keeps waiting); active
 * ones go only to that address and never below port 1024, unless the
 * configuration allows it.
 *
 * The transfers themselves are ftp_transfer.c.
 */
#include "core/conn.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/worker.h"
#include "protocols/ftp/ftp_impl.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <openssl/ssl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- addresses ---- */

/* The IPv4 address inside sa (plain or v4-mapped), or 0 if none. */
static int v4_of(const struct sockaddr *sa, struct in_addr *out)
{
    /* Every sa comes from getsockname, getpeername or accept4, which clang 14's
     * analyzer does not see fill it (glibc passes it as a transparent union). */
    /* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult) */
    if (sa->sa_family == AF_INET) {
        *out = ((const struct sockaddr_in *)sa)->sin_addr;
        return 1;
    }
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        memcpy(out, s6->sin6_addr.s6_addr + 12, 4);
        return 1;
    }
    return 0;
}

static int same_host(const struct sockaddr *a, const struct sockaddr *b)
{
    struct in_addr x, y;
    if (v4_of(a, &x) && v4_of(b, &y))
        return x.s_addr == y.s_addr;
    if (a->sa_family == AF_INET6 && b->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
    return 0;
}

static void host_text(const struct sockaddr *sa, char *buf, size_t len)
{
    struct in_addr v4;
    if (v4_of(sa, &v4))
        inet_ntop(AF_INET, &v4, buf, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
    else
        snprintf(buf, len, "?");
}

/* ---- the transfer log (xferlog(5), as wu-ftpd and vsftpd write it) ---- */

static void log_transfer(struct ftp_session *s, const char *why)
{
    struct ftp_data *d = s->data;
    struct timeval now;
    gettimeofday(&now, NULL);
    double secs = d->started_xfer ? (double)(now.tv_sec - d->started.tv_sec) +
                                        (double)(now.tv_usec - d->started.tv_usec) / 1e6
                                  : 0;
    int in = d->kind == X_STOR;
    if (why)
        log_info(s->c->peer, "ftp: %s %s %s: %llu bytes in %.3f s, incomplete: %s", s->user,
                 d->verb, d->vpath, (unsigned long long)d->bytes, secs, why);
    else
        log_info(s->c->peer, "ftp: %s %s %s: %llu bytes in %.3f s", s->user, d->verb, d->vpath,
                 (unsigned long long)d->bytes, secs);
    if (d->kind == X_LIST)
        return;
    ftp_count(s, why ? FTP_ABORTED : in ? FTP_UPLOADS : FTP_DOWNLOADS, 1);
    if (s->cfg->xferlog_fd < 0)
        return;
    char when[32], host[INET6_ADDRSTRLEN], name[FTP_MAX_PATH];
    struct tm tm;
    time_t t = now.tv_sec;
    localtime_r(&t, &tm);
    strftime(when, sizeof when, "%a %b %e %H:%M:%S %Y", &tm);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (conn_peer_addr(s->c, &ss, &sl) == 0)
        host_text((struct sockaddr *)&ss, host, sizeof host);
    else
        snprintf(host, sizeof host, "-");
    /* xferlog fields are separated by spaces: a name's spaces (and any
     * control character) become '_', as vsftpd writes them. */
    size_t i = 0;
    for (const char *p = d->vpath; *p && i + 1 < sizeof name; p++)
        name[i++] = (*p == ' ' || (unsigned char)*p < 32 || *p == 127) ? '_' : *p;
    name[i] = '\0';
    char line[FTP_MAX_PATH + 256];
    int n = snprintf(line, sizeof line, "%s %.0f %s %llu %s %c _ %c %c %s ftp 0 * %c\n", when,
                     secs < 1 ? 1 : secs, host, (unsigned long long)d->bytes, name,
                     d->ascii ? 'a' : 'b', in ? 'i' : 'o', s->anonymous ? 'a' : 'r', s->user,
                     why ? 'i' : 'c');
    if (n > 0 && write(s->cfg->xferlog_fd, line, (size_t)n < sizeof line ? (size_t)n : 0) < 0)
        log_warn(s->cfg->name, "transfer log %s: %s", s->cfg->xferlog, strerror(errno));
}

/* ---- the channel ---- */

void ftp_data_close(struct ftp_session *s, const char *why)
{
    struct ftp_data *d = s->data;
    if (!d)
        return;
    if (d->kind != X_NONE) {
        log_transfer(s, why);
        if (why && d->tmp && d->dirfd >= 0)
            unlinkat(d->dirfd, d->tmp, 0); /* the old file stays as it was */
        ftp_idle_timeout(s, 1);
    }
    if (d->ev)
        event_free(d->ev);
    if (d->lfd >= 0)
        close(d->lfd);
    SSL_free(d->ssl); /* (a transfer's close_notify went in send_done) */
    if (d->fd >= 0)
        close(d->fd);
    if (d->file_fd >= 0)
        close(d->file_fd);
    if (d->dirfd >= 0)
        close(d->dirfd);
    if (d->dir)
        closedir(d->dir);
    if (d->buf)
        evbuffer_free(d->buf);
    free(d->iobuf);
    free(d->vpath);
    free(d->tmp);
    free(d->name);
    free(d->list_dir);
    free(d);
    s->data = NULL;
}

static struct ftp_data *data_new(struct ftp_session *s)
{
    ftp_data_close(s, NULL);
    struct ftp_data *d = calloc(1, sizeof *d);
    if (!d) {
        ftp_reply(s, 425, "Out of memory.");
        return NULL;
    }
    d->lfd = d->fd = d->file_fd = d->dirfd = -1;
    s->data = d;
    return d;
}

void ftp_data_describe(const struct ftp_session *s, char *buf, size_t len)
{
    const struct ftp_data *d = s->data;
    if (d->kind == X_NONE)
        snprintf(buf, len, ", %s data channel open", d->active ? "active" : "passive");
    else if (!d->started_xfer)
        snprintf(buf, len, ", %s %.200s waiting for the data connection", d->verb, d->vpath);
    else if (d->kind == X_RETR)
        snprintf(buf, len, ", %s %.200s %llu/%lld bytes", d->verb, d->vpath,
                 (unsigned long long)d->bytes,
                 (long long)(d->size - (d->offset - (off_t)d->bytes)));
    else
        snprintf(buf, len, ", %s %.200s %llu bytes", d->verb, d->vpath,
                 (unsigned long long)d->bytes);
}

void ftp_xfer_end(struct ftp_session *s, int code, const char *text, const char *why)
{
    if (why)
        conn_count_error(s->c);
    ftp_data_close(s, why);
    ftp_reply(s, code, "%s", text);
    ftp_transfer_done(s);
}

/* ---- passive ---- */

static int listen_on(struct ftp_session *s, struct sockaddr_storage *local, socklen_t ll)
{
    const struct ftp_cfg *f = s->cfg;
    unsigned n = f->pasv_min ? f->pasv_max - f->pasv_min + 1 : 1;
    int err = EADDRINUSE;
    for (unsigned i = 0; i < n; i++) {
        unsigned port = f->pasv_min ? f->pasv_min + s->fw->next_port++ % n : 0;
        if (local->ss_family == AF_INET)
            ((struct sockaddr_in *)local)->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)local)->sin6_port = htons((uint16_t)port);
        int fd = socket(local->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        /* SO_REUSEADDR: a port whose last data connection is in TIME_WAIT
         * can listen again; two listeners still cannot share it. */
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)local, ll) == 0 && listen(fd, 1) == 0)
            return fd;
        err = errno;
        close(fd);
        if (err != EADDRINUSE)
            break;
    }
    errno = err;
    return -1;
}

static void unused_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct ftp_session *s = arg;
    log_info(s->c->peer, "ftp: data connection unused for %u s; closed", s->cfg->data_ms / 1000);
    ftp_data_close(s, NULL);
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct ftp_session *s = arg;
    struct ftp_data *d = s->data;
    if (what & EV_TIMEOUT) {
        if (d->kind == X_NONE) { /* a PASV nobody used: let the port go */
            log_info(s->c->peer, "ftp: passive port unused for %u s; closed",
                     s->cfg->data_ms / 1000);
            ftp_data_close(s, NULL);
            return;
        }
        ftp_xfer_end(s, 425, "Failed to establish the data connection: timed out.",
                     "no data connection");
        return;
    }
    struct sockaddr_storage ss, peer;
    socklen_t sl = sizeof ss, pl = sizeof peer;
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM)
            return; /* EAGAIN, ECONNABORTED: keep waiting */
        /* The connection stays queued and the socket readable: waiting
         * would spin. The channel ends, as with a timeout. */
        int err = errno;
        log_warn(s->c->peer, "ftp: passive accept: %s; data channel closed", strerror(err));
        if (d->kind == X_NONE) {
            conn_count_error(s->c);
            ftp_data_close(s, NULL);
            return;
        }
        char why[128];
        snprintf(why, sizeof why, "Failed to establish the data connection: %s.", strerror(err));
        ftp_xfer_end(s, 425, why, "no data connection");
        return;
    }
    /* The client's side: the control connection's TCP peer, or behind a
     * load balancer (proxy_protocol) the client it named. */
    int ours = getpeername(s->c->fd, (struct sockaddr *)&peer, &pl) == 0 &&
               same_host((struct sockaddr *)&ss, (struct sockaddr *)&peer);
    pl = sizeof peer;
    if (!ours && s->c->proxied)
        ours = conn_peer_addr(s->c, &peer, &pl) == 0 &&
               same_host((struct sockaddr *)&ss, (struct sockaddr *)&peer);
    if (!ours) {
        char host[INET6_ADDRSTRLEN];
        host_text((struct sockaddr *)&ss, host, sizeof host);
        log_warn(s->c->peer, "ftp: data connection from foreign address %s refused", host);
        conn_count_error(s->c);
        close(fd);
        return; /* keep waiting for the client's own */
    }
    d->fd = fd;
    event_free(d->ev);
    d->ev = NULL;
    close(d->lfd);
    d->lfd = -1;
    if (d->kind != X_NONE) {
        ftp_transfer_start(s);
        return;
    }
    /* Connected before its command: it waits data_timeout for one. */
    struct timeval tv = ftp_tv(s->cfg->data_ms);
    if (s->cfg->data_ms && (d->ev = evtimer_new(s->c->w->base, unused_cb, s)))
        evtimer_add(d->ev, &tv);
}

void ftp_cmd_pasv(struct ftp_session *s, const char *arg, int extended)
{
    if (extended && strcasecmp(arg, "ALL") == 0) {
        s->epsv_all = 1;
        ftp_reply(s, 200, "EPSV ALL ok: only EPSV from now on.");
        return;
    }
    if (!extended && s->epsv_all) {
        ftp_reply(s, 500, "EPSV ALL is in force: use EPSV.");
        return;
    }
    struct sockaddr_storage local;
    socklen_t ll = sizeof local;
    if (getsockname(s->c->fd, (struct sockaddr *)&local, &ll) < 0) {
        ftp_reply(s, 425, "Cannot open a passive connection: %s.", strerror(errno));
        return;
    }
    struct in_addr v4;
    int is_v4 = v4_of((struct sockaddr *)&local, &v4);
    if (extended && arg[0]) {
        if (strcmp(arg, "1") != 0 && strcmp(arg, "2") != 0) {
            ftp_reply(s, 501, "EPSV takes 1, 2 or ALL.");
            return;
        }
        if ((arg[0] == '1') != is_v4) {
            ftp_reply(s, 522, "Network protocol not supported, use (%d)", is_v4 ? 1 : 2);
            return;
        }
    }
    if (!extended && !is_v4) {
        ftp_reply(s, 425, "PASV needs IPv4: use EPSV.");
        return;
    }
    struct ftp_data *d = data_new(s);
    if (!d)
        return;
    if ((d->lfd = listen_on(s, &local, ll)) < 0) {
        log_warn(s->c->peer, "ftp: no passive port: %s", strerror(errno));
        ftp_data_close(s, NULL);
        ftp_reply(s, 425, "Cannot open a passive connection: %s.", strerror(errno));
        return;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(d->lfd, (struct sockaddr *)&bound, &bl);
    unsigned port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                     : ((struct sockaddr_in6 *)&bound)->sin6_port);
    struct timeval tv = ftp_tv(s->cfg->data_ms);
    if (!(d->ev = event_new(s->c->w->base, d->lfd, EV_READ | EV_PERSIST, accept_cb, s)) ||
        event_add(d->ev, s->cfg->data_ms ? &tv : NULL) < 0) {
        ftp_data_close(s, NULL);
        ftp_reply(s, 425, "Out of memory.");
        return;
    }
    if (extended) {
        ftp_reply(s, 229, "Entering Extended Passive Mode (|||%u|)", port);
        return;
    }
    if (s->cfg->pasv_address)
        v4 = s->cfg->pasv_in;
    uint32_t a = ntohl(v4.s_addr);
    ftp_reply(s, 227, "Entering Passive Mode (%u,%u,%u,%u,%u,%u).", a >> 24, a >> 16 & 255,
              a >> 8 & 255, a & 255, port >> 8, port & 255);
}

/* ---- active ---- */

void ftp_cmd_port(struct ftp_session *s, const char *arg, int extended)
{
    if (s->epsv_all) {
        ftp_reply(s, 500, "EPSV ALL is in force: use EPSV.");
        return;
    }
    struct sockaddr_storage to, peer;
    socklen_t tl, pl = sizeof peer;
    if ((extended ? ftp_parse_eprt(arg, &to, &tl) : ftp_parse_port(arg, &to, &tl)) < 0) {
        ftp_reply(s, 501, "Illegal %s command.", extended ? "EPRT" : "PORT");
        return;
    }
    if (conn_peer_addr(s->c, &peer, &pl) < 0) {
        ftp_reply(s, 425, "Cannot reach you: %s.", strerror(errno));
        return;
    }
    struct in_addr dummy;
    int peer_v4 = v4_of((struct sockaddr *)&peer, &dummy);
    if (extended && (to.ss_family == AF_INET) != peer_v4) {
        ftp_reply(s, 522, "Network protocol not supported, use (%d)", peer_v4 ? 1 : 2);
        return;
    }
    unsigned port = ntohs(to.ss_family == AF_INET ? ((struct sockaddr_in *)&to)->sin_port
                                                  : ((struct sockaddr_in6 *)&to)->sin6_port);
    char host[INET6_ADDRSTRLEN];
    host_text((struct sockaddr *)&to, host, sizeof host);
    if (!s->cfg->allow_foreign_data &&
        !same_host((struct sockaddr *)&to, (struct sockaddr *)&peer)) {
        log_warn(s->c->peer, "ftp: %s to %s refused: not the client's address (bounce attack?)",
                 extended ? "EPRT" : "PORT", host);
        conn_count_error(s->c);
        ftp_reply(s, 504, "Illegal %s command: data connections go to your own address only.",
                  extended ? "EPRT" : "PORT");
        return;
    }
    if (!s->cfg->allow_low_ports && port < 1024) {
        log_warn(s->c->peer, "ftp: %s to port %u refused: below 1024", extended ? "EPRT" : "PORT",
                 port);
        conn_count_error(s->c);
        ftp_reply(s, 504, "Illegal %s command: port %u is below 1024.", extended ? "EPRT" : "PORT",
                  port);
        return;
    }
    struct ftp_data *d = data_new(s);
    if (!d)
        return;
    d->active = 1;
    d->to = to;
    d->tolen = tl;
    ftp_reply(s, 200, "%s command successful. Consider using EPSV.", extended ? "EPRT" : "PORT");
}

static void connect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ftp_session *s = arg;
    int err = 0;
    socklen_t el = sizeof err;
    if (what & EV_TIMEOUT)
        err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        log_info(s->c->peer, "ftp: active data connection failed: %s", strerror(err));
        ftp_xfer_end(s, 425, "Failed to establish the data connection.", strerror(err));
        return;
    }
    event_free(s->data->ev);
    s->data->ev = NULL;
    ftp_transfer_start(s);
}

/* ---- starting a transfer ---- */

/* Checks and starts a transfer command: a channel must be there. */
int ftp_data_ready(struct ftp_session *s)
{
    if (!s->data || s->data->kind != X_NONE) {
        ftp_reply(s, 425, "Use PORT, EPRT, PASV or EPSV first.");
        s->rest = 0;
        return 0;
    }
    if (s->cfg->tls_required && !s->prot_private) {
        ftp_reply(s, 521, "Data connections must be protected: PROT P first.");
        s->rest = 0;
        return 0;
    }
    return 1;
}

/* The 150 reply is out: connect, or wait for the client's connection. */
void ftp_data_go(struct ftp_session *s, const char *verb, char *vpath, enum ftp_xfer kind)
{
    struct ftp_data *d = s->data;
    d->kind = kind;
    snprintf(d->verb, sizeof d->verb, "%s", verb);
    d->vpath = vpath;
    d->ascii = s->type_ascii;
    ftp_idle_timeout(s, 0); /* the control connection is quiet while data flows */
    struct timeval tv = ftp_tv(s->cfg->data_ms);
    if (d->active) {
        struct sockaddr_storage local;
        socklen_t ll = sizeof local;
        d->fd = socket(d->to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (d->fd < 0) {
            ftp_xfer_end(s, 425, "Failed to establish the data connection.", strerror(errno));
            return;
        }
        /* From the address the client talks to, whatever the routes say. */
        /* getsockname fills local, as in v4_of.
         * NOLINTBEGIN(clang-analyzer-core.UndefinedBinaryOperatorResult) */
        if (getsockname(s->c->fd, (struct sockaddr *)&local, &ll) == 0 &&
            local.ss_family == d->to.ss_family) {
            /* NOLINTEND(clang-analyzer-core.UndefinedBinaryOperatorResult) */
            if (local.ss_family == AF_INET)
                ((struct sockaddr_in *)&local)->sin_port = 0;
            else
                ((struct sockaddr_in6 *)&local)->sin6_port = 0;
            (void)bind(d->fd, (struct sockaddr *)&local, ll); /* else the routes' choice */
        }
        if (connect(d->fd, (struct sockaddr *)&d->to, d->tolen) == 0) {
            ftp_transfer_start(s);
            return;
        }
        if (errno != EINPROGRESS) {
            ftp_xfer_end(s, 425, "Failed to establish the data connection.", strerror(errno));
            return;
        }
        if (!(d->ev = event_new(s->c->w->base, d->fd, EV_WRITE, connect_cb, s)) ||
            event_add(d->ev, s->cfg->data_ms ? &tv : NULL) < 0)
            ftp_xfer_end(s, 451, "Out of memory.", "out of memory");
        return;
    }
    if (d->fd >= 0) {
        ftp_transfer_start(s);
        return;
    }
    event_add(d->ev, s->cfg->data_ms ? &tv : NULL); /* the data timeout starts now */
}

void ftp_cmd_abor(struct ftp_session *s)
{
    if (!s->data || s->data->kind == X_NONE) {
        ftp_data_close(s, NULL);
        ftp_reply(s, 225, "No transfer to abort.");
        return;
    }
    ftp_data_close(s, "aborted by the client");
    ftp_reply(s, 426, "Connection closed; transfer aborted.");
    ftp_reply(s, 226, "ABOR successful.");
    ftp_quit_if_pending(s);
}
