/*
 * static and userdir handlers: files under a root.
 *
 * Confinement. The request path is already normalised (no "." or "..",
 * no encoded slash, no NUL). Files are opened with fs_open_beneath(), so
 * no resolution, symlinks included, leaves the root; with
 * allow_symlinks_outside the root is only lexical.
 *
 * The open-file cache is per handler and per worker (so no locks): the
 * handler's per-worker context (http.h's ctx_init), a bounded hash with LRU
 * eviction of open descriptors, their stat, ready-made
 * headers, and for small files the contents, so a hit is answered with one
 * writev and no system call on the file. Misses (ENOENT...) are cached too.
 * Entries are checked again after cache_valid. Larger bodies go out with
 * sendfile from the cached descriptor. An entry is reference-counted, so
 * eviction never closes a descriptor a response is still sending from.
 */
#include "core/conn.h"
#include "core/fs.h"
#include "core/list.h"
#include "core/log.h"
#include "protocols/http/http.h"
#include "protocols/http/http_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fentry {
    struct fentry *hnext;
    struct list lru; /* the cache's, most recent first */
    unsigned refs;   /* +1 while in the cache, +1 per response using it */
    int cached;
    uint32_t hash;
    uint64_t checked_ms;
    int err; /* 0, or the errno of a failed lookup */
    int fd;
    struct stat st;
    char *data; /* whole contents of a small regular file */
    char *hdrs; /* Content-Type, Last-Modified, ETag, Accept-Ranges lines */
    size_t hdrs_len;
    char etag[48];
    char lastmod[HTTP_DATE_LEN + 1];
    char key[];
};

struct fcache {
    struct fentry **buckets;
    size_t nbuckets, count;
    struct list lru; /* most recent first */
};

struct static_conf {
    char *root;
    int rootfd;
    int allow_outside;
    int listing;
    int gzip;
    char **index;
    size_t nindex;
    unsigned cache_entries, cache_valid_ms;
    size_t cache_max_file;
    /* userdir */
    char *userdir;
    long min_uid;
};

/* What serving one request looks at: a root and, maybe, a cache. */
struct froot {
    const struct static_conf *conf;
    int rootfd;
    struct fcache *cache; /* NULL: every lookup is fresh */
    const struct mime_table *mime;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- entries ---- */

static void fentry_unref(void *p)
{
    struct fentry *e = p;
    if (--e->refs)
        return;
    if (e->fd >= 0)
        close(e->fd);
    free(e->data);
    free(e->hdrs);
    free(e);
}

static uint32_t fnv(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void cache_remove(struct fcache *fc, struct fentry *e)
{
    struct fentry **pp = &fc->buckets[e->hash & (fc->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_remove(&e->lru);
    fc->count--;
    e->cached = 0;
    fentry_unref(e);
}

static struct fcache *fcache_new(unsigned entries)
{
    struct fcache *fc = calloc(1, sizeof *fc);
    if (!fc)
        return NULL;
    fc->nbuckets = 16;
    while (fc->nbuckets < entries)
        fc->nbuckets *= 2;
    if (!(fc->buckets = calloc(fc->nbuckets, sizeof *fc->buckets))) {
        free(fc);
        return NULL;
    }
    list_init(&fc->lru);
    return fc;
}

static void fcache_free(struct fcache *fc)
{
    if (!fc)
        return;
    struct list *pos;
    while ((pos = list_first(&fc->lru)))
        cache_remove(fc, list_entry(pos, struct fentry, lru));
    free(fc->buckets);
    free(fc);
}

static struct fentry *fentry_load(const struct froot *fr, const char *key, size_t klen)
{
    struct fentry *e = calloc(1, sizeof *e + klen + 1);
    if (!e)
        return NULL;
    memcpy(e->key, key, klen);
    e->refs = 1;
    e->fd = fs_open_beneath(fr->rootfd, key, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY,
                            fr->conf->allow_outside);
    if (e->fd < 0) {
        e->err = errno;
        return e;
    }
    if (fstat(e->fd, &e->st) < 0) {
        e->err = errno;
        close(e->fd);
        e->fd = -1;
        return e;
    }
    if (!S_ISREG(e->st.st_mode))
        return e;
    snprintf(e->etag, sizeof e->etag, "\"%llx-%llx\"", (unsigned long long)e->st.st_mtime,
             (unsigned long long)e->st.st_size);
    http_date_format(e->st.st_mtime, e->lastmod);
    const char *name = key;
    size_t nl = klen;
    const size_t gz = sizeof ".gz" - 1;
    if (nl > gz && memcmp(name + nl - gz, LIT(".gz")) == 0)
        nl -= gz; /* a .gz sibling has its original's type */
    char base[PATH_MAX];
    snprintf(base, sizeof base, "%.*s", (int)nl, name);
    const char *ctype = mime_lookup(fr->mime, base);
    int text = strncmp(ctype, LIT("text/")) == 0 || strstr(ctype, "javascript") ||
               strstr(ctype, "json") || strstr(ctype, "xml");
    struct sbuf sb = {0};
    sb_addf(&sb, "Content-Type: %s%s\r\nLast-Modified: %s\r\nETag: %s\r\nAccept-Ranges: bytes\r\n",
            ctype, text && !strstr(ctype, "charset") ? "; charset=utf-8" : "", e->lastmod, e->etag);
    if (sb.failed) {
        e->err = ENOMEM;
        return e;
    }
    e->hdrs = sb.p;
    e->hdrs_len = sb.len;
    if (e->st.st_size <= (off_t)fr->conf->cache_max_file && fr->cache) {
        e->data = malloc((size_t)e->st.st_size + 1);
        ssize_t n = e->data ? pread(e->fd, e->data, (size_t)e->st.st_size, 0) : -1;
        if (n != e->st.st_size) { /* changed under us, or no memory: use sendfile */
            free(e->data);
            e->data = NULL;
        }
    }
    return e;
}

/* A reference the caller must fentry_unref; NULL only without memory. */
static struct fentry *lookup(const struct froot *fr, const char *key, size_t klen)
{
    struct fcache *fc = fr->cache;
    if (!fc)
        return fentry_load(fr, key, klen);
    uint32_t h = fnv(key, klen);
    uint64_t now = mono_ms();
    for (struct fentry *e = fc->buckets[h & (fc->nbuckets - 1)]; e; e = e->hnext) {
        if (e->hash != h || strncmp(e->key, key, klen) != 0 || e->key[klen])
            continue;
        if (now - e->checked_ms > fr->conf->cache_valid_ms) {
            cache_remove(fc, e); /* stale: look again */
            break;
        }
        list_remove(&e->lru);
        list_insert_head(&fc->lru, &e->lru);
        e->refs++;
        return e;
    }
    struct fentry *e = fentry_load(fr, key, klen);
    if (!e)
        return NULL;
    e->hash = h;
    e->checked_ms = now;
    e->cached = 1;
    e->refs++; /* the cache's */
    e->hnext = fc->buckets[h & (fc->nbuckets - 1)];
    fc->buckets[h & (fc->nbuckets - 1)] = e;
    list_insert_head(&fc->lru, &e->lru);
    if (++fc->count > fr->conf->cache_entries)
        cache_remove(fc, list_entry(list_last(&fc->lru), struct fentry, lru));
    return e;
}

/* ---- serving ---- */

static int etag_matches(const struct http_str *inm, const char *etag)
{
    size_t el = strlen(etag);
    const char *p = inm->p, *end = inm->p + inm->len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p < end && *p == '*')
            return 1;
        /* cppcheck 2.10 takes p for end here */
        /* cppcheck-suppress knownConditionTrueFalse */
        if (end - p > 2 && p[0] == 'W' && p[1] == '/')
            p += 2; /* weak comparison, as RFC 9110 says for If-None-Match */
        const char *s = p;
        while (p < end && *p != ',')
            p++;
        const char *t = p;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - s) == el && memcmp(s, etag, el) == 0)
            return 1;
    }
    return 0;
}

static int not_modified(struct http_req *r, const struct fentry *e)
{
    const struct http_str *inm = &r->known[HK_IF_NONE_MATCH];
    if (inm->p)
        return etag_matches(inm, e->etag); /* takes precedence over the date */
    const struct http_str *ims = &r->known[HK_IF_MODIFIED_SINCE];
    if (ims->p) {
        time_t t = http_date_parse(ims->p, ims->len);
        return t >= 0 && e->st.st_mtime <= t;
    }
    return 0;
}

static int accepts_gzip(const struct http_req *r)
{
    const struct http_str *ae = &r->known[HK_ACCEPT_ENCODING];
    if (!ae->p) /* (no arithmetic on the absent header's NULL) */
        return 0;
    const char *p = ae->p, *end = ae->p + ae->len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ';' && *p != ' ')
            p++;
        int gz = ((size_t)(p - tok) == sizeof "gzip" - 1 && strncasecmp(tok, LIT("gzip")) == 0) ||
                 (p - tok == 1 && *tok == '*');
        double q = 1;
        while (p < end && *p != ',') {
            if (*p == ';') {
                p++;
                while (p < end && *p == ' ')
                    p++;
                /* cppcheck-suppress knownConditionTrueFalse ; as above */
                if (end - p > 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=')
                    q = strtod(p + 2, NULL);
            } else {
                p++;
            }
        }
        if (gz && q > 0)
            return 1;
    }
    return 0;
}

static void serve_file(struct http_req *r, struct fentry *e, struct fentry *gz)
{
    struct fentry *body = gz ? gz : e;
    if (not_modified(r, body)) {
        http_resp_start(r, 304);
        http_resp_header(r, "ETag", body->etag, strlen(body->etag));
        http_resp_header(r, "Last-Modified", body->lastmod, HTTP_DATE_LEN);
        if (gz)
            http_resp_raw(r, LIT("Vary: Accept-Encoding\r\n"));
        http_resp_nobody(r);
        fentry_unref(body);
        return;
    }
    off_t size = body->st.st_size, start = 0, end = size;
    int status = 200;
    const struct http_str *range = &r->known[HK_RANGE];
    const struct http_str *ifr = &r->known[HK_IF_RANGE];
    if (range->p && r->method == HTTP_GET &&
        (!ifr->p || (ifr->len == strlen(body->etag) && memcmp(ifr->p, body->etag, ifr->len) == 0) ||
         (ifr->len == HTTP_DATE_LEN && memcmp(ifr->p, body->lastmod, HTTP_DATE_LEN) == 0))) {
        int rc = http_range_parse(range->p, range->len, size, &start, &end);
        if (rc < 0) {
            fentry_unref(body);
            char extra[64];
            snprintf(extra, sizeof extra, "Content-Range: bytes */%llu\r\n",
                     (unsigned long long)size);
            http_error(r, 416, extra);
            return;
        }
        if (rc > 0)
            status = 206;
    }
    http_resp_start(r, status);
    http_resp_raw(r, body->hdrs, body->hdrs_len);
    if (gz)
        http_resp_raw(r, LIT("Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"));
    if (status == 206)
        http_resp_headerf(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)start,
                          (unsigned long long)end - 1, (unsigned long long)size);
    if (body->data)
        http_resp_body_ref(r, body->data + start, (size_t)(end - start), body, fentry_unref);
    else
        http_resp_body_file(r, body->fd, start, end - start, body, fentry_unref);
}

/* A regular file (reference e, consumed), or its .gz sibling instead. */
static void serve_regular(struct http_req *r, const struct froot *fr, struct fentry *e,
                          const char *key)
{
    struct fentry *gz = NULL;
    if (fr->conf->gzip && accepts_gzip(r)) {
        char gzkey[PATH_MAX];
        int gl = snprintf(gzkey, sizeof gzkey, "%s.gz", key);
        if (gl > 0 && (size_t)gl < sizeof gzkey)
            gz = lookup(fr, gzkey, (size_t)gl);
        if (gz && (gz->err || !S_ISREG(gz->st.st_mode))) {
            fentry_unref(gz);
            gz = NULL;
        }
    }
    serve_file(r, e, gz);
    if (gz)
        fentry_unref(e);
}

struct listed {
    char *name; /* with a trailing '/' for folders */
    int dir;
    off_t size;
    time_t mtime;
};

/* Folders first, then files, each by name (byte order). */
static int cmp_listed(const void *a, const void *b)
{
    const struct listed *x = a, *y = b;
    if (x->dir != y->dir)
        return y->dir - x->dir;
    return strcmp(x->name, y->name);
}

/* nginx's autoindex, in a table: name, last modified (UTC), size (the exact
 * byte count in its title). */
static void serve_listing(struct http_req *r, struct fentry *dir)
{
    int fd = dup(dir->fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        http_error(r, 500, NULL);
        return;
    }
    rewinddir(d);
    struct listed *v = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (strcmp(de->d_name, ".") == 0 ||
            (strcmp(de->d_name, "..") == 0 && !strcmp(r->path, "/")))
            continue;
        struct stat st;
        /* the entry itself: a symlink's target may be outside the root */
        int ok = fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0;
        if (n == cap) {
            struct listed *nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof *v);
            if (!nv)
                break;
            v = nv;
        }
        size_t l = strlen(de->d_name);
        int isdir = ok ? S_ISDIR(st.st_mode) : de->d_type == DT_DIR;
        if (!(v[n].name = malloc(l + 2)))
            break;
        memcpy(v[n].name, de->d_name, l);
        v[n].name[l] = isdir ? '/' : '\0';
        v[n].name[l + 1] = '\0';
        v[n].dir = isdir;
        v[n].size = ok && !S_ISLNK(st.st_mode) ? st.st_size : -1;
        v[n].mtime = ok ? st.st_mtime : 0;
        n++;
    }
    closedir(d);
    if (n > 1) /* an empty folder has no array: qsort's base may not be NULL */
        qsort(v, n, sizeof *v, cmp_listed);
    struct sbuf sb = {0};
    sb_adds(&sb, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ");
    sb_add_html(&sb, r->path, strlen(r->path));
    sb_adds(&sb, "</title><style>body{font-family:sans-serif}td,th{padding:2px 12px;"
                 "text-align:left}td.n{text-align:right}</style></head><body><h1>Index of ");
    sb_add_html(&sb, r->path, strlen(r->path));
    sb_adds(&sb, "</h1><table>\n<tr><th>Name</th><th>Last modified</th><th>Size</th></tr>\n");
    for (size_t i = 0; i < n; i++) {
        sb_adds(&sb, "<tr><td><a href=\"");
        struct sbuf href = {0};
        sb_add_urlpath(&href, v[i].name, strlen(v[i].name));
        sb_add_html(&sb, href.p ? href.p : "", href.len);
        sb_free(&href);
        sb_adds(&sb, "\">");
        sb_add_html(&sb, v[i].name, strlen(v[i].name));
        sb_adds(&sb, "</a></td><td>");
        struct tm tm;
        char when[32] = "-";
        if (v[i].mtime && gmtime_r(&v[i].mtime, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
        sb_adds(&sb, when);
        if (v[i].dir || v[i].size < 0) {
            sb_adds(&sb, "</td><td class=\"n\">-</td></tr>\n");
        } else {
            sb_addf(&sb, "</td><td class=\"n\" title=\"%lld bytes\">", (long long)v[i].size);
            sb_add_bytes(&sb, (unsigned long long)v[i].size);
            sb_adds(&sb, "</td></tr>\n");
        }
        free(v[i].name);
    }
    free(v);
    sb_adds(&sb, "</table></body></html>\n");
    if (sb.failed) {
        http_error(r, 500, NULL);
    } else {
        http_resp_start(r, 200);
        http_resp_body(r, "text/html; charset=utf-8", sb.p, sb.len);
    }
    sb_free(&sb);
}

static int deny_status(int err)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
        return 404;
    case EACCES:
    case EPERM:
    case ELOOP:
    case EXDEV:
        return 403;
    default:
        return 500;
    }
}

/* rel: the file's path under the root, without a leading slash. */
static void serve_path(struct http_req *r, const struct froot *fr, const char *rel)
{
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
        http_error(r, 405, "Allow: GET, HEAD\r\n");
        return;
    }
    size_t rl = strlen(rel);
    struct fentry *e = lookup(fr, rel, rl);
    if (!e) {
        http_error(r, 500, NULL);
        return;
    }
    if (e->err) {
        if (e->err == EXDEV || e->err == ELOOP)
            log_info(r->c->peer, "refused %s: it leads outside the root", r->path);
        http_error(r, deny_status(e->err), NULL);
        fentry_unref(e);
        return;
    }
    if (S_ISDIR(e->st.st_mode)) {
        size_t pl = strlen(r->path);
        if (r->path[pl - 1] != '/') {
            /* Absolute, with the host and port the client used. */
            char origin[512];
            http_origin(r, origin, sizeof origin);
            struct sbuf loc = {0};
            sb_adds(&loc, origin);
            sb_add_urlpath(&loc, r->path, pl);
            sb_adds(&loc, "/");
            if (r->query.p) {
                sb_adds(&loc, "?");
                sb_add(&loc, r->query.p, r->query.len);
            }
            if (loc.failed)
                http_error(r, 500, NULL);
            else
                http_redirect(r, 301, loc.p, loc.len);
            sb_free(&loc);
            fentry_unref(e);
            return;
        }
        char key[PATH_MAX];
        for (size_t i = 0; i < fr->conf->nindex; i++) {
            int kl = snprintf(key, sizeof key, "%s%s%s", rel, rl ? "/" : "", fr->conf->index[i]);
            if (kl < 0 || (size_t)kl >= sizeof key)
                continue;
            struct fentry *ix = lookup(fr, key, (size_t)kl);
            if (ix && !ix->err && S_ISREG(ix->st.st_mode)) {
                fentry_unref(e);
                serve_regular(r, fr, ix, key);
                return;
            }
            if (ix)
                fentry_unref(ix);
        }
        if (fr->conf->listing)
            serve_listing(r, e);
        else
            http_error(r, 403, NULL);
        fentry_unref(e);
        return;
    }
    if (!S_ISREG(e->st.st_mode)) {
        http_error(r, 403, NULL);
        fentry_unref(e);
        return;
    }
    serve_regular(r, fr, e, rel);
}

static enum http_action static_on_req(struct http_handler *h, struct http_req *r)
{
    struct static_conf *sc = h->conf;
    struct froot fr = {sc, sc->rootfd, http_handler_ctx(r, h), h->srv->mime};
    const char *rel = r->path + h->path_len;
    if (h->path_len && h->path[h->path_len - 1] == '/')
        rel--;               /* the prefix's slash begins the rest */
    if (*rel && *rel != '/') /* "/static" matched "/staticfoo": not ours */
        return HTTP_NEXT;
    while (*rel == '/')
        rel++;
    serve_path(r, &fr, rel);
    return HTTP_DONE;
}

/* The open-file cache is this worker's context (none without cache_entries). */
static int static_ctx_init(struct http_handler *h, struct worker *w, void **ctx)
{
    (void)w;
    const struct static_conf *sc = h->conf;
    *ctx = NULL;
    if (sc->cache_entries && !(*ctx = fcache_new(sc->cache_entries))) {
        log_error(NULL, "static %s: out of memory for the open-file cache", h->path);
        return -1;
    }
    return 0;
}

static void static_ctx_dispose(struct http_handler *h, void *ctx)
{
    (void)h;
    fcache_free(ctx);
}

/* ---- configuration ---- */

static void static_free(struct http_handler *h)
{
    struct static_conf *sc = h->conf;
    if (!sc)
        return;
    if (sc->rootfd >= 0)
        close(sc->rootfd);
    for (size_t i = 0; i < sc->nindex; i++)
        free(sc->index[i]);
    free(sc->index);
    free(sc->root);
    free(sc->userdir);
    free(sc);
}

static int parse_common(struct cfg_ctx *ctx, const config_setting_t *block, struct static_conf *sc)
{
    long long entries = 1024, max_file = 16384;
    unsigned valid_ms = 1000;
    if (cfg_bool(ctx, block, "listing", &sc->listing) < 0 ||
        cfg_bool(ctx, block, "gzip_static", &sc->gzip) < 0 ||
        cfg_bool(ctx, block, "allow_symlinks_outside", &sc->allow_outside) < 0 ||
        cfg_int(ctx, block, "cache_entries", 0, 1 << 20, &entries) < 0 ||
        cfg_int(ctx, block, "cache_max_file", 0, 1 << 24, &max_file) < 0 ||
        cfg_duration_ms(ctx, block, "cache_valid", 3600, &valid_ms) < 0)
        return -1;
    sc->cache_entries = (unsigned)entries;
    sc->cache_max_file = (size_t)max_file;
    sc->cache_valid_ms = valid_ms;
    const config_setting_t *ix = config_setting_get_member(block, "index");
    size_t n = ix ? (size_t)config_setting_length(ix) : 1;
    if (ix && !config_setting_is_array(ix))
        return cfg_error(ctx, ix, "'index' must be a list of file names");
    if (!(sc->index = calloc(n + 1, sizeof *sc->index)))
        return cfg_error(ctx, block, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *name = ix ? config_setting_get_string_elem(ix, (int)i) : "index.html";
        if (!name || !*name || strchr(name, '/'))
            return cfg_error(ctx, ix, "index entries are plain file names");
        if (!(sc->index[i] = strdup(name)))
            return cfg_error(ctx, block, "out of memory");
        sc->nindex++;
    }
    return 0;
}

static int static_parse(struct cfg_ctx *ctx, const config_setting_t *block, struct http_handler *h)
{
    struct static_conf *sc = calloc(1, sizeof *sc);
    if (!sc)
        return cfg_error(ctx, block, "out of memory");
    h->conf = sc;
    sc->rootfd = -1;
    sc->gzip = 1;
    const char *root = NULL;
    if (cfg_string(ctx, block, "root", &root) < 0 || parse_common(ctx, block, sc) < 0)
        return -1;
    if (!root)
        return cfg_error(ctx, block, "a static handler needs 'root'");
    if (!(sc->root = cfg_path(ctx, root)))
        return cfg_error(ctx, block, "out of memory");
    sc->rootfd = open(sc->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (sc->rootfd < 0)
        return cfg_error(ctx, config_setting_get_member(block, "root"), "root %s: %s", sc->root,
                         strerror(errno));
    return 0;
}

static const char *const static_keys[] = {"root",
                                          "index",
                                          "listing",
                                          "gzip_static",
                                          "cache_entries",
                                          "cache_max_file",
                                          "cache_valid",
                                          "allow_symlinks_outside",
                                          NULL};

const struct http_handler_ops http_static_ops = {
    .type = "static",
    .keys = static_keys,
    .parse = static_parse,
    .free = static_free,
    .on_req = static_on_req,
    .ctx_init = static_ctx_init,
    .ctx_dispose = static_ctx_dispose,
};

/* ---- userdir: /~user/... from that user's public_html ---- */

static enum http_action userdir_on_req(struct http_handler *h, struct http_req *r)
{
    struct static_conf *sc = h->conf;
    const char *p = r->path + h->path_len; /* after "/~" */
    const char *slash = strchr(p, '/');
    size_t ul = slash ? (size_t)(slash - p) : strlen(p);
    char user[64];
    if (ul == 0 || ul >= sizeof user) {
        http_error(r, 404, NULL);
        return HTTP_DONE;
    }
    for (size_t i = 0; i < ul; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", p[i])) {
            http_error(r, 404, NULL);
            return HTTP_DONE;
        }
    memcpy(user, p, ul);
    user[ul] = '\0';
    if (!slash) { /* /~user -> /~user/ */
        char origin[512];
        http_origin(r, origin, sizeof origin);
        struct sbuf loc = {0};
        sb_adds(&loc, origin);
        sb_add_urlpath(&loc, r->path, strlen(r->path));
        sb_adds(&loc, "/");
        http_redirect(r, 301, loc.p ? loc.p : "/", loc.len);
        sb_free(&loc);
        return HTTP_DONE;
    }
    struct passwd pw, *res = NULL;
    char pwbuf[4096];
    if (getpwnam_r(user, &pw, pwbuf, sizeof pwbuf, &res) != 0 || !res ||
        (long)pw.pw_uid < sc->min_uid || !pw.pw_dir) {
        http_error(r, 404, NULL);
        return HTTP_DONE;
    }
    char dir[PATH_MAX];
    int dl = snprintf(dir, sizeof dir, "%s/%s", pw.pw_dir, sc->userdir);
    int rootfd =
        dl > 0 && (size_t)dl < sizeof dir ? open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
    if (rootfd < 0) {
        http_error(r, 404, NULL);
        return HTTP_DONE;
    }
    struct froot fr = {sc, rootfd, NULL, h->srv->mime};
    serve_path(r, &fr, slash + 1);
    close(rootfd); /* open files keep their own descriptors */
    return HTTP_DONE;
}

static int userdir_parse(struct cfg_ctx *ctx, const config_setting_t *block, struct http_handler *h)
{
    struct static_conf *sc = calloc(1, sizeof *sc);
    if (!sc)
        return cfg_error(ctx, block, "out of memory");
    h->conf = sc;
    sc->rootfd = -1;
    const char *dir = "public_html";
    long long min_uid = 1000;
    if (cfg_string(ctx, block, "dir", &dir) < 0 ||
        cfg_int(ctx, block, "min_uid", 1, 1LL << 31, &min_uid) < 0 ||
        parse_common(ctx, block, sc) < 0)
        return -1;
    if (!*dir || dir[0] == '/' || strstr(dir, ".."))
        return cfg_error(ctx, block, "'dir' is a folder inside each home, like public_html");
    sc->min_uid = (long)min_uid;
    sc->cache_entries = 0; /* per-user roots are looked up fresh */
    if (!(sc->userdir = strdup(dir)))
        return cfg_error(ctx, block, "out of memory");
    return 0;
}

static const char *const userdir_keys[] = {
    "dir", "min_uid", "index", "listing", "gzip_static", "allow_symlinks_outside", NULL};

const struct http_handler_ops http_userdir_ops = {
    .type = "userdir",
    .keys = userdir_keys,
    .parse = userdir_parse,
    .free = static_free,
    .on_req = userdir_on_req,
};
