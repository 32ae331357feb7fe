/*
 * put handler: uploads under a path prefix into a folder. The body (with
 * Content-Length or chunked) goes to a temporary file beside the target,
 * which is renamed over the target only when the whole body has arrived:
 * an aborted, oversized or timed-out upload leaves no file behind, and a
 * reader never sees half a file. 201 when the file is new, 204 when it
 * replaced one. Paths are confined like the static handler's (the folder is
 * opened with fs_open_beneath), and only existing folders are used.
 */
#include "core/conn.h"
#include "core/fs.h"
#include "core/log.h"
#include "protocols/http/http.h"
#include "protocols/http/http_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct put_conf {
    char *dir;
    int dirfd;
};

struct upload {
    int dirfd; /* the target's folder */
    int fd;    /* the temporary file */
    char tmp[NAME_MAX + 1];
    char name[NAME_MAX + 1];
};

static void upload_free(struct http_req *r, int keep)
{
    struct upload *u = r->hstate;
    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (!keep && u->tmp[0])
        unlinkat(u->dirfd, u->tmp, 0);
    close(u->dirfd);
    free(u);
    r->hstate = NULL;
}

static enum http_action put_on_req(struct http_handler *h, struct http_req *r)
{
    struct put_conf *pc = h->conf;
    if (r->method != HTTP_PUT) {
        http_error(r, 405, "Allow: PUT\r\n");
        return HTTP_DONE;
    }
    const char *rel = r->path + h->path_len;
    if (h->path_len && h->path[h->path_len - 1] == '/')
        rel--;
    if (*rel && *rel != '/')
        return HTTP_NEXT;
    while (*rel == '/')
        rel++;
    const char *slash = strrchr(rel, '/');
    const char *name = slash ? slash + 1 : rel;
    if (!*name || strlen(name) > NAME_MAX - 16) {
        http_error(r, *name ? 414 : 405, *name ? NULL : "Allow: GET, HEAD\r\n");
        return HTTP_DONE;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - rel) : 0, rel);
    struct upload *u = calloc(1, sizeof *u);
    if (!u) {
        http_error(r, 500, NULL);
        return HTTP_DONE;
    }
    u->fd = -1;
    u->dirfd = fs_open_beneath(pc->dirfd, dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (u->dirfd < 0) {
        int err = errno;
        free(u);
        if (err == EXDEV || err == ELOOP)
            log_info(r->c->peer, "refused upload to %s: it leads outside the folder", r->path);
        http_error(r, err == ENOENT || err == ENOTDIR ? 404 : 403, NULL);
        return HTTP_DONE;
    }
    snprintf(u->name, sizeof u->name, "%s", name);
    for (int attempt = 0; attempt < 16 && u->fd < 0; attempt++) {
        unsigned rnd;
        if (getentropy(&rnd, sizeof rnd) < 0)
            rnd = (unsigned)rand(); /* NOLINT(cert-msc30-c): O_EXCL guards the name, not secrecy */
        snprintf(u->tmp, sizeof u->tmp, ".%.*s.%08x.part", NAME_MAX - 24, name, rnd);
        u->fd =
            openat(u->dirfd, u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (u->fd < 0 && errno != EEXIST)
            break;
    }
    if (u->fd < 0) {
        log_error(r->c->peer, "upload %s: cannot create a temporary file: %s", r->path,
                  strerror(errno));
        u->tmp[0] = '\0';
        r->hstate = u;
        upload_free(r, 0);
        http_error(r, errno == EACCES ? 403 : 500, NULL);
        return HTTP_DONE;
    }
    r->hstate = u;
    return HTTP_BODY;
}

static int put_on_body(struct http_req *r, const char *data, size_t len)
{
    struct upload *u = r->hstate;
    while (len) {
        ssize_t n = write(u->fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error(r->c->peer, "upload %s: %s", r->path, strerror(errno));
            return errno == ENOSPC || errno == EDQUOT ? 507 : 500;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static void put_on_body_end(struct http_req *r)
{
    struct upload *u = r->hstate;
    struct stat st;
    int existed = fstatat(u->dirfd, u->name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (existed && S_ISDIR(st.st_mode)) {
        upload_free(r, 0);
        http_error(r, 409, NULL);
        return;
    }
    if (close(u->fd) < 0 || renameat(u->dirfd, u->tmp, u->dirfd, u->name) < 0) {
        u->fd = -1;
        log_error(r->c->peer, "upload %s: %s", r->path, strerror(errno));
        upload_free(r, 0);
        http_error(r, 500, NULL);
        return;
    }
    u->fd = -1;
    upload_free(r, 1);
    log_info(r->c->peer, "upload %s: %lld bytes, %s", r->path, r->body_seen,
             existed ? "replaced" : "created");
    if (existed) {
        http_resp_start(r, 204);
        http_resp_nobody(r);
    } else {
        http_resp_start(r, 201);
        http_resp_header_untrusted(r, "Location", r->path, strlen(r->path));
        http_resp_body(r, "text/plain; charset=utf-8", LIT("created\n"));
    }
}

static void put_on_abort(struct http_req *r)
{
    if (r->hstate)
        log_info(r->c->peer, "upload %s aborted after %lld bytes; nothing kept", r->path,
                 r->body_seen);
    upload_free(r, 0);
}

static void put_free(struct http_handler *h)
{
    struct put_conf *pc = h->conf;
    if (!pc)
        return;
    if (pc->dirfd >= 0)
        close(pc->dirfd);
    free(pc->dir);
    free(pc);
}

static int put_parse(struct cfg_ctx *ctx, const config_setting_t *block, struct http_handler *h)
{
    struct put_conf *pc = calloc(1, sizeof *pc);
    if (!pc)
        return cfg_error(ctx, block, "out of memory");
    h->conf = pc;
    pc->dirfd = -1;
    const char *dir = NULL;
    long long max = 0; /* 0: the server's max_body */
    if (cfg_string(ctx, block, "root", &dir) < 0 ||
        cfg_int(ctx, block, "max_size", 0, 1LL << 40, &max) < 0)
        return -1;
    if (!dir)
        return cfg_error(ctx, block, "a put handler needs 'root', the folder uploads go to");
    if (!(pc->dir = cfg_path(ctx, dir)))
        return cfg_error(ctx, block, "out of memory");
    pc->dirfd = open(pc->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (pc->dirfd < 0)
        return cfg_error(ctx, config_setting_get_member(block, "root"), "root %s: %s", pc->dir,
                         strerror(errno));
    h->max_body = max;
    if (!h->methods)
        h->methods = 1ull << HTTP_PUT;
    return 0;
}

static const char *const put_keys[] = {"root", "max_size", NULL};

const struct http_handler_ops http_put_ops = {
    .type = "put",
    .keys = put_keys,
    .parse = put_parse,
    .free = put_free,
    .on_req = put_on_req,
    .on_body = put_on_body,
    .on_body_end = put_on_body_end,
    .on_abort = put_on_abort,
};
