/*
 * FTP transfers: RETR, STOR/APPE/STOU and LIST/NLST/MLSD once their data
 * connection is up (ftp_data.c makes it).
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
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/worker.h"
#include "protocols/ftp/ftp_impl.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define RETR_BUDGET (4u << 20) /* bytes per wake-up */
#define STOR_BUF (256u << 10)
#define ASCII_BUF (64u << 10)
#define TLS_SLICE 16384        /* one TLS record */
#define LIST_AHEAD (64u << 10) /* listing bytes made ahead of the socket */

static void io_cb(evutil_socket_t fd, short what, void *arg);

static void flow(struct ftp_session *s);

/* PROT P: the data connection's handshake, the server as TLS server (RFC
 * 4217), within the data timeout. */
static void tls_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ftp_session *s = arg;
    struct ftp_data *d = s->data;
    if (what & EV_TIMEOUT) {
        tls_count_failed(d->ssl, s->c->peer, "data connection: no handshake in time");
        ftp_xfer_end(s, 425, "TLS handshake on the data connection timed out.", "TLS timeout");
        return;
    }
    short want = 0;
    int r = tls_handshake(d->ssl, s->c->peer, &want);
    if (r < 0) {
        ftp_xfer_end(s, 522, "TLS handshake on the data connection failed.", "TLS failure");
        return;
    }
    if (r == 0) {
        struct timeval tv = ftp_tv(s->cfg->data_ms);
        if (d->ev)
            event_free(d->ev);
        if (!(d->ev = event_new(s->c->w->base, fd, want, tls_cb, s)) ||
            event_add(d->ev, s->cfg->data_ms ? &tv : NULL) < 0) {
            d->ev = NULL;
            ftp_xfer_end(s, 451, "Out of memory.", "out of memory");
        }
        return;
    }
    if (s->cfg->tls_reuse && (!SSL_session_reused(d->ssl) || !tls_same_origin(d->ssl, s->c->ssl))) {
        log_info(s->c->peer, "ftp: data connection did not resume the TLS session %s; refused",
                 SSL_session_reused(d->ssl) ? "of its control connection" : "");
        ftp_xfer_end(s, 522,
                     "TLS session of the data connection must resume the control "
                     "connection's session.",
                     "TLS session not resumed");
        return;
    }
    if (d->ev)
        event_free(d->ev);
    d->ev = NULL;
    flow(s);
}

/* The data connection is up: in TLS first (PROT P), then bytes flow. */
void ftp_transfer_start(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    if (d->ev) { /* the unused-connection timer */
        event_free(d->ev);
        d->ev = NULL;
    }
    if (!s->prot_private) {
        flow(s);
        return;
    }
    if (!(d->ssl = tls_new(s->c->svc->tls, d->fd, s->c->peer))) {
        ftp_xfer_end(s, 451, "Cannot start TLS on the data connection.", "TLS failure");
        return;
    }
    /* an upload that ends without close_notify may be cut short: 426, not 226 */
    SSL_clear_options(d->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    tls_cb(d->fd, EV_READ, s);
}

static void flow(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    d->started_xfer = 1;
    gettimeofday(&d->started, NULL);
    struct timeval tv = ftp_tv(s->cfg->data_ms);
    short ev = (d->kind == X_STOR ? EV_READ : EV_WRITE) | EV_PERSIST;
    if (!(d->ev = event_new(s->c->w->base, d->fd, ev, io_cb, s)) ||
        event_add(d->ev, s->cfg->data_ms ? &tv : NULL) < 0) {
        ftp_xfer_end(s, 451, "Out of memory.", "out of memory");
        return;
    }
}

/* Data connection I/O, in TLS after PROT P; contract of read(2)/send(2). */
static ssize_t data_read(struct ftp_data *d, void *buf, size_t len)
{
    short want;
    return d->ssl ? tls_read(d->ssl, buf, len, &want) : read(d->fd, buf, len);
}

static ssize_t data_write(struct ftp_data *d, const void *buf, size_t len)
{
    short want;
    return d->ssl ? tls_write(d->ssl, buf, len, &want) : send(d->fd, buf, len, MSG_NOSIGNAL);
}

/* Everything is sent; over TLS the close_notify must go too (it tells the
 * client the data is whole): if the socket is full, the next wake-up
 * tries again. */
static void send_done(struct ftp_session *s)
{
    struct ftp_data *d = s->data;
    if (d->ssl) {
        ERR_clear_error();
        int r = SSL_shutdown(d->ssl);
        if (r < 0 && SSL_get_error(d->ssl, r) == SSL_ERROR_WANT_WRITE) {
            d->tls_closing = 1;
            return;
        }
    }
    ftp_xfer_end(s, 226, "Transfer complete.", NULL);
}

static void io_error(struct ftp_session *s, int err, int local)
{
    if (local)
        ftp_xfer_end(s, err == ENOSPC || err == EDQUOT ? 452 : 451,
                     err == ENOSPC || err == EDQUOT
                         ? "Insufficient storage space: transfer aborted."
                         : "Local error in processing: transfer aborted.",
                     strerror(err));
    else
        ftp_xfer_end(s, 426, "Connection closed; transfer aborted.", strerror(err));
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
        ssize_t n;
        if (d->ssl) { /* one TLS record at a time, read as the socket takes it */
            if (!d->iobuf && !(d->iobuf = malloc(TLS_SLICE))) {
                io_error(s, ENOMEM, 1);
                return;
            }
            n = pread(d->file_fd, d->iobuf, want < TLS_SLICE ? want : TLS_SLICE, d->offset);
            if (n > 0 && (n = data_write(d, d->iobuf, (size_t)n)) > 0)
                d->offset += n;
        } else {
            n = sendfile(d->fd, d->file_fd, &d->offset, want < budget ? want : budget);
        }
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
        ssize_t n;
        if (d->ssl) {
            size_t len = evbuffer_get_length(d->buf);
            len = len < TLS_SLICE ? len : TLS_SLICE;
            unsigned char *p = evbuffer_pullup(d->buf, (ev_ssize_t)len);
            if ((n = p ? data_write(d, p, len) : -1) > 0)
                evbuffer_drain(d->buf, (size_t)n);
        } else {
            n = evbuffer_write(d->buf, d->fd);
        }
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
        if (n == 0) { /* the file shrank under us: what is there is sent */
            d->size = d->offset;
            break;
        }
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
        if (n >= sizeof line || n < 2)
            continue;           /* a name too long to list */
        ftp_clean(line, n - 2); /* a CR or LF in a name would end the line */
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

/* Whether an ABOR starts a line in p[0..n). */
static int has_abor(const char *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++)
        if ((i == 0 || p[i - 1] == '\n' || (unsigned char)p[i - 1] >= 0xf0) &&
            strncasecmp(p + i, "ABOR", 4) == 0)
            return 1;
    return 0;
}

/* The client closed its side of a STOR: was that the end of the file, or
 * the end of the client? A client that dies takes its control connection
 * with it, and one that cancels sends ABOR (perhaps after closing the data
 * connection); only a client that is there and did neither gets its file. */
static int client_gave_up(struct ftp_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->c->bev);
    char buf[512];
    ssize_t n = evbuffer_copyout(in, buf, sizeof buf);
    if (n > 0 && has_abor(buf, (size_t)n))
        return 1;
    n = recv(s->c->fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return has_abor(buf, (size_t)n);
    return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
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
    if (client_gave_up(s)) {
        ftp_xfer_end(s, 426, "Connection closed; transfer aborted.",
                     "the client aborted or went away");
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
            ftp_xfer_end(s, 553,
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
        ssize_t n = data_read(d, d->iobuf, STOR_BUF);
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
        ftp_xfer_end(s, 426, "Data connection timed out; transfer aborted.", "data timeout");
        return;
    }
    if (s->data->tls_closing) {
        send_done(s);
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

void ftp_cmd_retr(struct ftp_session *s, const char *arg)
{
    char vpath[FTP_MAX_PATH];
    off_t rest = s->rest;
    s->rest = 0;
    if (!ftp_data_ready(s))
        return;
    if (ftp_resolve(s, arg, vpath) < 0)
        return;
    if (!ftp_may_read(s, vpath))
        return;
    int fd = ftp_open(s, vpath, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        ftp_fail(s, "RETR", vpath);
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
    if (!v || (s->type_ascii && ((!d->iobuf && !(d->iobuf = malloc(ASCII_BUF))) ||
                                 (!d->buf && !(d->buf = evbuffer_new()))))) {
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
    ftp_data_go(s, "RETR", v, X_RETR);
}

static int tmp_create(int dirfd, const char *base, char **name)
{
    for (int tries = 0; tries < 16; tries++) {
        unsigned r = 0;
        if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
            r = (unsigned)rand(); /* NOLINT(cert-msc30-c): O_EXCL guards the name, not secrecy */
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

/* STOU: a new name beside base (base, base.1, ...), created at once. */
static int stou_create(int dirfd, const char *base, char *unique, size_t len)
{
    for (unsigned i = 0; i < 1000; i++) {
        if (i)
            snprintf(unique, len, "%.200s.%u", base, i);
        else
            snprintf(unique, len, "%.200s", base);
        int fd = openat(dirfd, unique, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

/* STOR and APPE: the temporary file beside base, holding what APPE (all)
 * or REST (the first rest bytes) keeps of the old file. The descriptor; -1
 * with errno; or -2 when the refusal is already replied. */
static int stor_create(struct ftp_session *s, int dirfd, const char *base, const char *vpath,
                       int append, off_t rest, int noreplace, char **tmp)
{
    int oldfd = openat(dirfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (oldfd < 0 && errno != ENOENT) {
        /* Unreadable, a symlink, out of descriptors: not "no old file",
         * which APPE would turn into a file of just the new bytes. */
        if (errno != ELOOP)
            return -1;
        ftp_reply(s, 553, "%s: not a plain file.", vpath);
        return -2;
    }
    struct stat old;
    int have_old = oldfd >= 0 && fstat(oldfd, &old) == 0;
    off_t size = have_old ? old.st_size : 0, keep = append ? size : rest;
    const char *refuse = have_old && !S_ISREG(old.st_mode) ? "not a plain file"
                         : have_old && noreplace           ? "already exists"
                                                           : NULL;
    int fd = -2;
    if (refuse) {
        ftp_reply(s, 553, "%s: %s.", vpath, refuse);
    } else if (keep > size) {
        ftp_reply(s, 554, "Restart offset %lld is past the end of the file.", (long long)rest);
    } else if ((fd = tmp_create(dirfd, base, tmp)) >= 0 && have_old) {
        fchmod(fd, old.st_mode & 0777); /* never a setuid bit on new content */
        /* APPE: a reflink where the filesystem has them, else a copy. */
        if (keep && !(keep == size && ioctl(fd, FICLONE, oldfd) == 0) &&
            copy_prefix(oldfd, fd, keep) < 0) {
            int e = errno;
            close(fd);
            unlinkat(dirfd, *tmp, 0);
            free(*tmp);
            *tmp = NULL;
            errno = e;
            fd = -1;
        }
    }
    if (oldfd >= 0) {
        int e = errno;
        close(oldfd);
        errno = e;
    }
    return fd;
}

void ftp_cmd_stor(struct ftp_session *s, const char *arg, int how)
{
    static const char *const verbs[] = {"STOR", "APPE", "STOU"};
    const char *verb = verbs[how];
    char vpath[FTP_MAX_PATH];
    off_t rest = s->rest;
    s->rest = 0;
    if (!ftp_data_ready(s))
        return;
    if (how == 2 && !arg[0])
        arg = "file";
    if (ftp_resolve(s, arg, vpath) < 0)
        return;
    const char *base = strrchr(vpath, '/') + 1;
    if (!*base) {
        ftp_reply(s, 553, "%s: not a file name.", vpath);
        return;
    }
    int noreplace = 0;
    if (s->anonymous) {
        /* Anonymous users only drop new files into the upload folder. */
        const char *up = s->cfg->anon_upload;
        size_t pl = (size_t)(base - 1 - vpath);
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
    int dirfd = ftp_open_parent(s, vpath, &base);
    if (dirfd < 0) {
        ftp_fail(s, verb, vpath);
        return;
    }
    /* STOU writes its new name (tmp) in place; STOR and APPE write tmp and
     * rename it onto name when the upload is whole. */
    char unique[FTP_MAX_PATH], full[FTP_MAX_PATH];
    char *tmp = NULL, *name = NULL, *v = NULL;
    int fd;
    if (how == 2) {
        fd = stou_create(dirfd, base, unique, sizeof unique);
        int n =
            fd >= 0 ? snprintf(full, sizeof full, "%.*s%s", (int)(base - vpath), vpath, unique) : 0;
        if (fd >= 0 && n > 0 && (size_t)n < sizeof full)
            tmp = strdup(unique);
    } else {
        fd = stor_create(s, dirfd, base, vpath, how == 1, rest, noreplace, &tmp);
        name = fd >= 0 ? strdup(base) : NULL;
    }
    if (fd == -2) {
        close(dirfd);
        return;
    }
    struct ftp_data *d = s->data;
    free(d->iobuf);
    d->iobuf = NULL;
    if (fd < 0 || !tmp || (how != 2 && !name) || !(v = strdup(how == 2 ? full : vpath)) ||
        !(d->iobuf = malloc(STOR_BUF))) {
        int e = fd < 0 ? errno : ENOMEM;
        if (fd >= 0) {
            close(fd);
            /* STOR/APPE: stor_create returns a descriptor only with tmp set */
            /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
            unlinkat(dirfd, how == 2 ? unique : tmp, 0);
        }
        free(tmp);
        free(name);
        free(v);
        close(dirfd);
        errno = e;
        if (e == ENOSPC || e == EDQUOT)
            ftp_reply(s, 452, "Insufficient storage space.");
        else
            ftp_fail(s, verb, vpath);
        return;
    }
    d->file_fd = fd;
    d->dirfd = dirfd;
    d->tmp = tmp;
    d->name = name;
    d->noreplace = noreplace;
    if (how == 2) /* RFC 1123 4.1.2.9: the name in the 150 reply */
        ftp_reply(s, 150, "FILE: %s", unique);
    else
        ftp_reply(s, 150, "Ok to send data.");
    ftp_data_go(s, verb, v, X_STOR);
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
    if (n >= 2 && n < sizeof line) {
        ftp_clean(line, n - 2);
        evbuffer_add(d->buf, line, n);
    }
    d->list_done = 1;
    return 0;
}

void ftp_cmd_list(struct ftp_session *s, const char *arg, enum ftp_list_kind kind)
{
    static const char *const verbs[] = {"LIST", "NLST", "MLSD"};
    char vpath[FTP_MAX_PATH];
    if (!ftp_data_ready(s))
        return;
    while (arg[0] == '-' && kind != L_MLSD) { /* "LIST -la": ls options some clients send */
        arg += strcspn(arg, " ");
        arg += strspn(arg, " ");
    }
    if (ftp_resolve(s, arg, vpath) < 0)
        return;
    if (!ftp_may_read(s, vpath))
        return;
    struct ftp_data *d = s->data;
    char *v = strdup(vpath);
    free(d->list_dir);
    if (!d->buf)
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
        ftp_fail(s, verbs[kind], vpath);
        return;
    }
    d->list_kind = kind;
    ftp_count(s, FTP_LISTINGS, 1);
    ftp_reply(s, 150, "Here comes the directory listing.");
    ftp_data_go(s, verbs[kind], v, X_LIST);
}
