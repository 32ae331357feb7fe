/*
 * FTP data channels and transfers.
 *
 * A channel is made by PASV/EPSV (a listening socket on a port from the
 * configured range, or one the kernel picks) or PORT/EPRT (an address to
 * connect to when the transfer starts), and serves one transfer. Passive
 * connections are taken only from the control connection's peer address
 * (others are closed and logged, and the channel keeps waiting); active
 * ones go only to that address and never below port 1024, unless the
 * configuration allows it.
 *
 * Transfers are driven by the worker's loop on non-blocking sockets:
 * RETR in binary uses sendfile, at most RETR_BUDGET bytes per wake-up so
 * one fast client cannot starve the others; ASCII converts LF to CRLF
 * (RETR) and CRLF to LF (STOR) through a bounded buffer; listings are
 * made as the socket drains, never whole in memory.
 *
 * Uploads never replace a file with half of one: STOR and APPE write a
 * temporary file (".NAME.medusa-XXXXXX") in the target's folder, renamed
 * onto the name only once the client has closed the data connection
 * cleanly while its control connection is still there. APPE and STOR after
 * REST first copy the old file (or its first REST bytes) into the
 * temporary one, in the kernel (copy_file_range): a failed append leaves
 * the old file as it was. STOU creates its new name exclusively and
 * removes it if the upload fails.
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
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define RETR_BUDGET (4u << 20) /* bytes per wake-up */
#define STOR_BUF (256u << 10)
#define ASCII_BUF (64u << 10)
#define LIST_AHEAD (64u << 10) /* listing bytes made ahead of the socket */

static struct timeval ms_tv(unsigned ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/* ---- addresses ---- */

/* The IPv4 address inside sa (plain or v4-mapped), or 0 if none. */
static int v4_of(const struct sockaddr *sa, struct in_addr *out)
{
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

int ftp_xferlog_open(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

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
    if (getpeername(s->c->fd, (struct sockaddr *)&ss, &sl) == 0)
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

/* The transfer is over: its reply, and the session goes on (or ends, or
 * moves). s may be gone afterwards. */
static void xfer_end(struct ftp_session *s, int code, const char *text, const char *why)
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

static void start_io(struct ftp_session *s);

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
        xfer_end(s, 425, "Failed to establish the data connection: timed out.",
                 "no data connection");
        return;
    }
    struct sockaddr_storage ss, peer;
    socklen_t sl = sizeof ss, pl = sizeof peer;
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (getpeername(s->c->fd, (struct sockaddr *)&peer, &pl) < 0 ||
        !same_host((struct sockaddr *)&ss, (struct sockaddr *)&peer)) {
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
    if (d->kind != X_NONE)
        start_io(s);
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
    struct timeval tv = ms_tv(s->cfg->data_ms);
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
    if (getpeername(s->c->fd, (struct sockaddr *)&peer, &pl) < 0) {
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
        xfer_end(s, 425, "Failed to establish the data connection.", strerror(err));
        return;
    }
    event_free(s->data->ev);
    s->data->ev = NULL;
    start_io(s);
}

/* ---- running a transfer ---- */

static void io_cb(evutil_socket_t fd, short what, void *arg);

/* The data connection is up: bytes flow. */
static void start_io(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    d->started_xfer = 1;
    gettimeofday(&d->started, NULL);
    struct timeval tv = ms_tv(s->cfg->data_ms);
    short ev = (d->kind == X_STOR ? EV_READ : EV_WRITE) | EV_PERSIST;
    if (!(d->ev = event_new(s->c->w->base, d->fd, ev, io_cb, s)) ||
        event_add(d->ev, s->cfg->data_ms ? &tv : NULL) < 0) {
        xfer_end(s, 451, "Out of memory.", "out of memory");
        return;
    }
}

/* The 150 reply is out: connect, or wait for the client's connection. */
static void go(struct ftp_session *s, const char *verb, char *vpath, enum ftp_xfer kind)
{
    struct ftp_data *d = s->data;
    d->kind = kind;
    snprintf(d->verb, sizeof d->verb, "%s", verb);
    d->vpath = vpath;
    d->ascii = s->type_ascii;
    ftp_idle_timeout(s, 0); /* the control connection is quiet while data flows */
    struct timeval tv = ms_tv(s->cfg->data_ms);
    if (d->active) {
        struct sockaddr_storage local;
        socklen_t ll = sizeof local;
        d->fd = socket(d->to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (d->fd < 0) {
            xfer_end(s, 425, "Failed to establish the data connection.", strerror(errno));
            return;
        }
        /* From the address the client talks to, whatever the routes say. */
        if (getsockname(s->c->fd, (struct sockaddr *)&local, &ll) == 0 &&
            local.ss_family == d->to.ss_family) {
            if (local.ss_family == AF_INET)
                ((struct sockaddr_in *)&local)->sin_port = 0;
            else
                ((struct sockaddr_in6 *)&local)->sin6_port = 0;
            bind(d->fd, (struct sockaddr *)&local, ll);
        }
        if (connect(d->fd, (struct sockaddr *)&d->to, d->tolen) == 0) {
            start_io(s);
            return;
        }
        if (errno != EINPROGRESS) {
            xfer_end(s, 425, "Failed to establish the data connection.", strerror(errno));
            return;
        }
        if (!(d->ev = event_new(s->c->w->base, d->fd, EV_WRITE, connect_cb, s)) ||
            event_add(d->ev, s->cfg->data_ms ? &tv : NULL) < 0)
            xfer_end(s, 451, "Out of memory.", "out of memory");
        return;
    }
    if (d->fd >= 0) {
        start_io(s);
        return;
    }
    event_add(d->ev, s->cfg->data_ms ? &tv : NULL); /* the data timeout starts now */
}

/* Checks and starts a transfer command: a channel must be there. */
static int need_channel(struct ftp_session *s)
{
    if (!s->data || s->data->kind != X_NONE) {
        ftp_reply(s, 425, "Use PORT, EPRT, PASV or EPSV first.");
        s->rest = 0;
        return 0;
    }
    return 1;
}

static void send_done(struct ftp_session *s)
{
    xfer_end(s, 226, "Transfer complete.", NULL);
}

static void io_error(struct ftp_session *s, int err, int local)
{
    if (local)
        xfer_end(s, err == ENOSPC || err == EDQUOT ? 452 : 451,
                 err == ENOSPC || err == EDQUOT ? "Insufficient storage space: transfer aborted."
                                                : "Local error in processing: transfer aborted.",
                 strerror(err));
    else
        xfer_end(s, 426, "Connection closed; transfer aborted.", strerror(err));
}

static void counted(struct ftp_session *s, size_t n, int in)
{
    s->data->bytes += n;
    ftp_count(s, in ? FTP_BYTES_IN : FTP_BYTES_OUT, n);
    if (in)
        conn_count_in(s->c, n);
    else
        conn_count_out(s->c, n);
}

static void retr_binary(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    size_t budget = RETR_BUDGET;
    while (budget && d->offset < d->size) {
        size_t want = (size_t)(d->size - d->offset);
        ssize_t n = sendfile(d->fd, d->file_fd, &d->offset, want < budget ? want : budget);
        if (n > 0) {
            counted(s, (size_t)n, 0);
            budget -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) /* the file shrank under us: what is there is sent */
            break;
        io_error(s, errno, errno != EPIPE && errno != ECONNRESET);
        return;
    }
    if (d->offset >= d->size || budget)
        send_done(s);
}

/* Writes d->buf to the socket: 1 when it is empty, 0 when the socket is
 * full, -1 (the transfer ended) on error. */
static int flush_buf(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    while (evbuffer_get_length(d->buf)) {
        int n = evbuffer_write(d->buf, d->fd);
        if (n > 0) {
            counted(s, (size_t)n, 0);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        io_error(s, n < 0 ? errno : EPIPE, 0);
        return -1;
    }
    return 1;
}

static void retr_ascii(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    for (size_t budget = RETR_BUDGET; budget;) {
        int r = flush_buf(s);
        if (r <= 0)
            return;
        ssize_t n = pread(d->file_fd, d->iobuf, ASCII_BUF / 2, d->offset);
        if (n < 0) {
            io_error(s, errno, 1);
            return;
        }
        if (n == 0)
            break;
        d->offset += n;
        budget = budget > (size_t)n ? budget - (size_t)n : 0;
        const char *p = d->iobuf, *end = p + n;
        while (p < end) {
            const char *lf = memchr(p, '\n', (size_t)(end - p));
            size_t run = lf ? (size_t)(lf - p) : (size_t)(end - p);
            evbuffer_add(d->buf, p, run);
            if (!lf)
                break;
            evbuffer_add(d->buf, "\r\n", 2);
            p = lf + 1;
        }
    }
    if (flush_buf(s) == 1 && d->offset >= d->size)
        send_done(s);
}

static void list_fill(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    char line[FTP_MAX_PATH + 512];
    time_t now = time(NULL);
    while (!d->list_done && evbuffer_get_length(d->buf) < LIST_AHEAD) {
        struct dirent *e = d->dir ? readdir(d->dir) : NULL;
        if (!e) {
            d->list_done = 1;
            break;
        }
        if (e->d_name[0] == '.')
            continue; /* as ls without -a; our own upload temporaries too */
        struct stat st;
        if (fstatat(dirfd(d->dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        size_t n = 0;
        if (d->list_kind == L_NLST) {
            n = (size_t)snprintf(line, sizeof line, "%s\r\n", e->d_name);
        } else if (d->list_kind == L_LIST) {
            char link[FTP_MAX_PATH];
            ssize_t ll = S_ISLNK(st.st_mode)
                             ? readlinkat(dirfd(d->dir), e->d_name, link, sizeof link - 1)
                             : -1;
            if (ll >= 0)
                link[ll] = '\0';
            n = ftp_list_line(line, sizeof line, e->d_name, &st, ll >= 0 ? link : NULL, now);
        } else {
            if (S_ISLNK(st.st_mode)) {
                /* What the link leads to, if that is inside the root;
                 * else it shows as what it is. */
                char path[FTP_MAX_PATH];
                struct stat target;
                if (ftp_vpath(d->list_dir, e->d_name, path, sizeof path) == 0) {
                    int fd = ftp_open(s, path, O_PATH);
                    if (fd >= 0 && fstat(fd, &target) == 0)
                        st = target;
                    if (fd >= 0)
                        close(fd);
                }
            }
            char facts[256];
            ftp_facts(facts, sizeof facts, &st, s->perms, s->mlst_facts);
            if (S_ISLNK(st.st_mode))
                snprintf(facts, sizeof facts, "type=OS.unix=symlink;");
            n = (size_t)snprintf(line, sizeof line, "%s %s\r\n", facts, e->d_name);
        }
        if (n >= sizeof line)
            continue; /* a name too long to list */
        evbuffer_add(d->buf, line, n);
    }
}

static void list_step(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    for (;;) {
        list_fill(s);
        int r = flush_buf(s);
        if (r <= 0)
            return;
        if (d->list_done) {
            send_done(s);
            return;
        }
    }
}

/* The client closed its side of a STOR: was that the end of the file, or
 * the end of the client? A client that dies takes its control connection
 * with it; only a living one gets its file. */
static int control_gone(struct ftp_session *s)
{
    char b;
    ssize_t n = recv(s->c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void stor_finish(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    if (d->ascii && d->pending_cr) { /* a lone CR at the very end */
        if (write(d->file_fd, "\r", 1) != 1) {
            io_error(s, errno, 1);
            return;
        }
    }
    if (control_gone(s)) {
        xfer_end(s, 426, "Connection closed; transfer aborted.", "the client went away");
        return;
    }
    int rc = close(d->file_fd);
    d->file_fd = -1;
    if (rc < 0) {
        io_error(s, errno, 1);
        return;
    }
    if (d->name) {
        rc = d->noreplace ? renameat2(d->dirfd, d->tmp, d->dirfd, d->name, RENAME_NOREPLACE)
                          : renameat(d->dirfd, d->tmp, d->dirfd, d->name);
        if (rc < 0) {
            int e = errno;
            xfer_end(s, 553,
                     e == EEXIST ? "File exists: not replaced." : "Could not store the file.",
                     strerror(e));
            return;
        }
    }
    free(d->tmp);
    d->tmp = NULL; /* kept */
    send_done(s);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void stor_step(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    for (size_t budget = RETR_BUDGET; budget;) {
        ssize_t n = read(d->fd, d->iobuf, STOR_BUF);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            io_error(s, errno, 0);
            return;
        }
        if (n == 0) {
            stor_finish(s);
            return;
        }
        counted(s, (size_t)n, 1);
        budget = budget > (size_t)n ? budget - (size_t)n : 0;
        size_t len = (size_t)n;
        if (d->ascii) { /* CRLF to LF; a CR at the end waits for the next read */
            char *o = d->iobuf, *p = d->iobuf, *end = d->iobuf + n;
            if (d->pending_cr) {
                d->pending_cr = 0;
                if (*p != '\n' && write_all(d->file_fd, "\r", 1) < 0) {
                    io_error(s, errno, 1);
                    return;
                }
            }
            for (; p < end; p++) {
                if (*p == '\r') {
                    if (p + 1 == end) {
                        d->pending_cr = 1;
                        break;
                    }
                    if (p[1] == '\n')
                        continue;
                }
                *o++ = *p;
            }
            len = (size_t)(o - d->iobuf);
        }
        if (write_all(d->file_fd, d->iobuf, len) < 0) {
            io_error(s, errno, 1);
            return;
        }
    }
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct ftp_session *s = arg;
    if (what & EV_TIMEOUT) {
        log_info(s->c->peer, "ftp: data connection idle for %u s", s->cfg->data_ms / 1000);
        xfer_end(s, 426, "Data connection timed out; transfer aborted.", "data timeout");
        return;
    }
    switch (s->data->kind) {
    case X_RETR:
        if (s->data->ascii)
            retr_ascii(s);
        else
            retr_binary(s);
        break;
    case X_LIST:
        list_step(s);
        break;
    case X_STOR:
        stor_step(s);
        break;
    case X_NONE:
        break;
    }
}

/* ---- the commands ---- */

static int may_read(struct ftp_session *s, const char *vpath)
{
    const char *up = s->cfg->anon_upload;
    size_t ul = up ? strlen(up) : 0;
    if (!(s->perms & USER_READ) ||
        (s->anonymous && up && strncmp(vpath, up, ul) == 0 && (!vpath[ul] || vpath[ul] == '/'))) {
        ftp_reply(s, 550, "%s: permission denied.", vpath);
        return 0;
    }
    return 1;
}

static void open_failed(struct ftp_session *s, const char *verb, const char *vpath)
{
    int e = errno;
    if (e == EXDEV || e == ELOOP)
        log_warn(s->c->peer, "ftp: %s %s refused: it leads outside the root", verb, vpath);
    ftp_reply(s, 550, "%s: %s.", vpath,
              e == ENOENT                                             ? "no such file or folder"
              : e == ENOTDIR                                          ? "not a folder"
              : e == EXDEV || e == ELOOP || e == EACCES || e == EPERM ? "permission denied"
                                                                      : strerror(e));
}

void ftp_cmd_retr(struct ftp_session *s, const char *arg)
{
    char vpath[FTP_MAX_PATH];
    off_t rest = s->rest;
    s->rest = 0;
    if (!need_channel(s))
        return;
    if (ftp_resolve(s, arg, vpath, sizeof vpath) < 0) {
        ftp_reply(s, 553, "Path too long.");
        return;
    }
    if (!may_read(s, vpath))
        return;
    int fd = ftp_open(s, vpath, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        open_failed(s, "RETR", vpath);
        if (fd >= 0)
            close(fd);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        ftp_reply(s, 550, "%s: not a plain file.", vpath);
        return;
    }
    if (rest > st.st_size) {
        close(fd);
        ftp_reply(s, 554, "Restart offset %lld is past the end of the file (%lld bytes).",
                  (long long)rest, (long long)st.st_size);
        return;
    }
    char *v = strdup(vpath);
    struct ftp_data *d = s->data;
    if (!v || (s->type_ascii && (!(d->iobuf = malloc(ASCII_BUF)) || !(d->buf = evbuffer_new())))) {
        free(v);
        close(fd);
        ftp_reply(s, 451, "Out of memory.");
        return;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    d->file_fd = fd;
    d->offset = rest;
    d->size = st.st_size;
    ftp_reply(s, 150, "Opening %s mode data connection for %s (%lld bytes).",
              s->type_ascii ? "ASCII" : "BINARY", vpath, (long long)(st.st_size - rest));
    go(s, "RETR", v, X_RETR);
}

static int tmp_create(int dirfd, const char *base, char **name)
{
    for (int tries = 0; tries < 16; tries++) {
        unsigned r = 0;
        if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
            r = (unsigned)rand();
        char buf[FTP_MAX_PATH];
        int n = snprintf(buf, sizeof buf, ".%.200s.medusa-%08x", base, r);
        if (n < 0 || (size_t)n >= sizeof buf)
            return -1;
        int fd = openat(dirfd, buf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd >= 0) {
            if (!(*name = strdup(buf))) {
                unlinkat(dirfd, buf, 0);
                close(fd);
                errno = ENOMEM;
                return -1;
            }
            return fd;
        }
        if (errno != EEXIST)
            return -1;
    }
    return -1;
}

/* Copies the first n bytes of from into to, in the kernel. */
static int copy_prefix(int from, int to, off_t n)
{
    off_t in = 0;
    while (in < n) {
        ssize_t c = copy_file_range(from, &in, to, NULL, (size_t)(n - in), 0);
        if (c < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
            char buf[65536];
            ssize_t r =
                pread(from, buf, sizeof buf < (size_t)(n - in) ? sizeof buf : (size_t)(n - in), in);
            if (r <= 0 || write_all(to, buf, (size_t)r) < 0)
                return -1;
            in += r;
            continue;
        }
        if (c <= 0)
            return c == 0 ? 0 : -1;
    }
    return 0;
}

void ftp_cmd_stor(struct ftp_session *s, const char *arg, int how)
{
    static const char *const verbs[] = {"STOR", "APPE", "STOU"};
    const char *verb = verbs[how];
    char vpath[FTP_MAX_PATH];
    off_t rest = s->rest;
    s->rest = 0;
    if (!need_channel(s))
        return;
    if (how == 2 && !arg[0])
        arg = "file";
    if (ftp_resolve(s, arg, vpath, sizeof vpath) < 0) {
        ftp_reply(s, 553, "Path too long.");
        return;
    }
    const char *slash = strrchr(vpath, '/');
    if (!slash[1]) {
        ftp_reply(s, 553, "%s: not a file name.", vpath);
        return;
    }
    int noreplace = 0;
    if (s->anonymous) {
        /* Anonymous users only drop new files into the upload folder. */
        const char *up = s->cfg->anon_upload;
        size_t pl = (size_t)(slash - vpath);
        if (!up || how == 1 || rest || strlen(up) != pl || strncmp(vpath, up, pl) != 0) {
            log_info(s->c->peer, "ftp: anonymous %s %s refused", verb, vpath);
            ftp_reply(s, 553, "%s: permission denied.", vpath);
            return;
        }
        noreplace = 1;
    } else if (!(s->perms & USER_WRITE)) {
        log_info(s->c->peer, "ftp: %s may not write %s", s->user, vpath);
        ftp_reply(s, 553, "%s: permission denied.", vpath);
        return;
    }
    char parent[FTP_MAX_PATH];
    size_t pl = slash == vpath ? 1 : (size_t)(slash - vpath);
    memcpy(parent, vpath, pl);
    parent[pl] = '\0';
    const char *base = slash + 1;
    struct ftp_data *d = s->data;
    int dirfd = ftp_open(s, parent, O_PATH | O_DIRECTORY);
    if (dirfd < 0) {
        open_failed(s, verb, parent);
        return;
    }
    char *tmp = NULL, *name = NULL, *v = NULL;
    int fd = -1;
    char unique[FTP_MAX_PATH];
    if (how == 2) { /* STOU: a new name, taken now */
        for (unsigned i = 0; i < 1000 && fd < 0; i++) {
            if (i)
                snprintf(unique, sizeof unique, "%.200s.%u", base, i);
            else
                snprintf(unique, sizeof unique, "%.200s", base);
            fd = openat(dirfd, unique, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
            if (fd < 0 && errno != EEXIST)
                break;
        }
        if (fd >= 0 && !(tmp = strdup(unique))) {
            unlinkat(dirfd, unique, 0);
            close(fd);
            fd = -1;
            errno = ENOMEM;
        }
    } else {
        struct stat old;
        int oldfd = openat(dirfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        int have_old = oldfd >= 0 && fstat(oldfd, &old) == 0;
        if (have_old && !S_ISREG(old.st_mode)) {
            close(oldfd);
            close(dirfd);
            ftp_reply(s, 553, "%s: not a plain file.", vpath);
            return;
        }
        if (noreplace && (have_old || (oldfd < 0 && errno == ELOOP))) {
            if (oldfd >= 0)
                close(oldfd);
            close(dirfd);
            ftp_reply(s, 553, "%s: already exists.", vpath);
            return;
        }
        off_t keep = how == 1 ? (have_old ? old.st_size : 0) : rest;
        if (keep > (have_old ? old.st_size : 0)) {
            if (oldfd >= 0)
                close(oldfd);
            close(dirfd);
            ftp_reply(s, 554, "Restart offset %lld is past the end of the file.", (long long)rest);
            return;
        }
        fd = tmp_create(dirfd, base, &tmp);
        if (fd >= 0 && have_old) {
            fchmod(fd, old.st_mode & 07777);
            if (keep && copy_prefix(oldfd, fd, keep) < 0) {
                int e = errno;
                close(fd);
                unlinkat(dirfd, tmp, 0);
                free(tmp);
                tmp = NULL;
                fd = -1;
                errno = e;
            }
        }
        if (oldfd >= 0)
            close(oldfd);
        if (fd >= 0 && !(name = strdup(base))) {
            close(fd);
            unlinkat(dirfd, tmp, 0);
            fd = -1;
            errno = ENOMEM;
        }
    }
    if (fd < 0 || !(v = strdup(vpath)) || !(d->iobuf = malloc(STOR_BUF))) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlinkat(dirfd, tmp, 0);
        }
        free(tmp);
        free(name);
        free(v);
        close(dirfd);
        errno = e;
        if (e == ENOSPC || e == EDQUOT)
            ftp_reply(s, 452, "Insufficient storage space.");
        else
            open_failed(s, verb, vpath);
        return;
    }
    d->file_fd = fd;
    d->dirfd = dirfd;
    d->tmp = tmp;
    d->name = name;
    d->noreplace = noreplace;
    if (how == 2) {
        /* RFC 1123 4.1.2.9: the name in the 150 reply */
        char full[FTP_MAX_PATH];
        ftp_vpath(parent, unique, full, sizeof full);
        free(v);
        v = strdup(full);
        if (!v) {
            unlinkat(d->dirfd, d->tmp, 0);
            ftp_data_close(s, NULL);
            ftp_reply(s, 451, "Out of memory.");
            return;
        }
        ftp_reply(s, 150, "FILE: %s", unique);
    } else {
        ftp_reply(s, 150, "Ok to send data.");
    }
    go(s, verb, v, X_STOR);
}

/* LIST or NLST of a file: its own line. */
static int list_one(struct ftp_session *s, const char *vpath, enum ftp_list_kind kind)
{
    struct ftp_data *d = s->data;
    struct stat st;
    int fd = ftp_open(s, vpath, O_PATH);
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    char line[FTP_MAX_PATH + 512];
    const char *slash = strrchr(vpath, '/');
    size_t n = kind == L_NLST ? (size_t)snprintf(line, sizeof line, "%s\r\n", vpath)
                              : ftp_list_line(line, sizeof line, slash + 1, &st, NULL, time(NULL));
    evbuffer_add(d->buf, line, n < sizeof line ? n : 0);
    d->list_done = 1;
    return 0;
}

void ftp_cmd_list(struct ftp_session *s, const char *arg, enum ftp_list_kind kind)
{
    static const char *const verbs[] = {"LIST", "NLST", "MLSD"};
    char vpath[FTP_MAX_PATH];
    if (!need_channel(s))
        return;
    while (arg[0] == '-' && kind != L_MLSD) { /* "LIST -la": ls options some clients send */
        arg += strcspn(arg, " ");
        arg += strspn(arg, " ");
    }
    if (ftp_resolve(s, arg, vpath, sizeof vpath) < 0) {
        ftp_reply(s, 553, "Path too long.");
        return;
    }
    if (!may_read(s, vpath))
        return;
    struct ftp_data *d = s->data;
    char *v = strdup(vpath);
    d->buf = evbuffer_new();
    if (!v || !d->buf || !(d->list_dir = strdup(vpath))) {
        free(v);
        ftp_reply(s, 451, "Out of memory.");
        return;
    }
    int fd = ftp_open(s, vpath, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        if (!(d->dir = fdopendir(fd))) {
            close(fd);
            free(v);
            ftp_reply(s, 451, "Cannot read the folder.");
            return;
        }
    } else if (errno != ENOTDIR || kind == L_MLSD || list_one(s, vpath, kind) < 0) {
        int e = errno;
        free(v);
        if (e == ENOTDIR && kind == L_MLSD) {
            ftp_reply(s, 501, "%s: not a folder (use MLST).", vpath);
            return;
        }
        errno = e;
        open_failed(s, verbs[kind], vpath);
        return;
    }
    d->list_kind = kind;
    ftp_count(s, FTP_LISTINGS, 1);
    ftp_reply(s, 150, "Here comes the directory listing.");
    go(s, verbs[kind], v, X_LIST);
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
    s->quit_pending = 0;
}
