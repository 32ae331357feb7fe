/* HTTP helpers; see http_util.h. */
#include "protocols/http/http_util.h"

#include "protocols/http/http.h"

#include <ctype.h>
#include <unistd.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

long http_path_normalize(const char *in, size_t len, char *out)
{
    if (len == 0 || in[0] != '/')
        return -400;
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        /* One segment: in[i] is '/'. */
        while (i < len && in[i] == '/')
            i++;
        if (o == 0 || out[o - 1] != '/')
            out[o++] = '/';
        size_t seg = o - 1; /* this segment's slash */
        while (i < len && in[i] != '/') {
            int ch = (unsigned char)in[i];
            if (ch == '%') {
                int hi = i + 2 < len ? hexval(in[i + 1]) : -1;
                int lo = hi >= 0 ? hexval(in[i + 2]) : -1;
                if (lo < 0)
                    return -400;
                ch = hi << 4 | lo;
                if (ch == '/')
                    return -404;
                i += 3;
            } else {
                i++;
            }
            if (ch == 0)
                return -400;
            out[o++] = (char)ch;
        }
        size_t slen = o - seg - 1;
        if (slen == 1 && out[seg + 1] == '.') {
            o = seg + 1; /* "." : drop it, keep the slash */
        } else if (slen == 2 && out[seg + 1] == '.' && out[seg + 2] == '.') {
            if (seg == 0)
                return -403;
            size_t prev = seg - 1; /* back to the previous segment's slash */
            while (out[prev] != '/')
                prev--;
            o = prev + 1;
        }
    }
    out[o] = '\0';
    return (long)o;
}

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void http_date_format(time_t t, char out[HTTP_DATE_LEN + 1])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    /* Fixed width, written by hand: this runs once a second per worker and
     * for every file loaded into the cache. */
    char *p = out;
    memcpy(p, wdays[tm.tm_wday], 3);
    p[3] = ',';
    p[4] = ' ';
    p[5] = (char)('0' + tm.tm_mday / 10);
    p[6] = (char)('0' + tm.tm_mday % 10);
    p[7] = ' ';
    memcpy(p + 8, months[tm.tm_mon], 3);
    p[11] = ' ';
    int y = (tm.tm_year + 1900) % 10000;
    p[12] = (char)('0' + y / 1000);
    p[13] = (char)('0' + y / 100 % 10);
    p[14] = (char)('0' + y / 10 % 10);
    p[15] = (char)('0' + y % 10);
    p[16] = ' ';
    p[17] = (char)('0' + tm.tm_hour / 10);
    p[18] = (char)('0' + tm.tm_hour % 10);
    p[19] = ':';
    p[20] = (char)('0' + tm.tm_min / 10);
    p[21] = (char)('0' + tm.tm_min % 10);
    p[22] = ':';
    p[23] = (char)('0' + tm.tm_sec / 10);
    p[24] = (char)('0' + tm.tm_sec % 10);
    memcpy(p + 25, " GMT", sizeof " GMT"); /* with its NUL */
}

static int month_index(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (strncmp(s, months[i], 3) == 0)
            return i;
    return -1;
}

time_t http_date_parse(const char *s, size_t len)
{
    char buf[64], mon[4], wd[16];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct tm tm = {0};
    int n = 0, consumed = 0;
    /* One branch a format, so two are alike. NOLINTBEGIN(bugprone-branch-clone) */
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    if (sscanf(buf, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", wd, &tm.tm_mday, mon, &tm.tm_year,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) == 7 &&
        consumed == (int)len) {
        n = 1;
    } else if (sscanf(buf, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d GMT%n", wd, &tm.tm_mday, mon,
                      &tm.tm_year, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) == 7 &&
               consumed == (int)len) {
        /* RFC 850: two-digit years are taken as 19xx/20xx by RFC 9110's rule
         * of thumb (more than 50 years ahead means the past century). */
        tm.tm_year += tm.tm_year < 70 ? 2000 : 1900;
        n = 1;
    } else if (sscanf(buf, "%3s %3s %2d %2d:%2d:%2d %4d%n", wd, mon, &tm.tm_mday, &tm.tm_hour,
                      &tm.tm_min, &tm.tm_sec, &tm.tm_year, &consumed) == 7 &&
               consumed == (int)len) {
        n = 1; /* asctime */
    }          /* NOLINTEND(bugprone-branch-clone) */
    if (!n)
        return -1;
    tm.tm_mon = month_index(mon);
    if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60 || tm.tm_year < 1970)
        return -1;
    tm.tm_year -= 1900;
    return timegm(&tm);
}

static int parse_off(const char **p, const char *end, off_t *out)
{
    const char *s = *p;
    off_t v = 0;
    if (s == end || !isdigit((unsigned char)*s))
        return -1;
    while (s < end && isdigit((unsigned char)*s)) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s++ - '0');
    }
    *p = s;
    *out = v;
    return 0;
}

int http_range_parse(const char *s, size_t len, off_t size, off_t *start, off_t *end)
{
    const char *p = s, *e = s + len;
    if (len < 6 || strncasecmp(p, "bytes=", 6) != 0)
        return 0;
    p += 6;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    if (memchr(p, ',', (size_t)(e - p)))
        return 0; /* several ranges: RFC 9110 lets us send the whole */
    off_t a, b;
    if (p < e && *p == '-') { /* suffix: the last b bytes */
        p++;
        if (parse_off(&p, e, &b) < 0)
            return 0;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        if (p != e)
            return 0;
        if (b == 0 || size == 0)
            return -1;
        *start = b >= size ? 0 : size - b;
        *end = size;
        return 1;
    }
    if (parse_off(&p, e, &a) < 0 || p == e || *p++ != '-')
        return 0;
    b = -1;
    if (p < e && isdigit((unsigned char)*p) && parse_off(&p, e, &b) < 0)
        return 0;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    if (p != e || (b >= 0 && b < a))
        return 0;
    if (a >= size)
        return -1;
    *start = a;
    *end = (b < 0 || b >= size) ? size : b + 1;
    return 1;
}

const struct http_vhost *http_vhost_match(const struct http_server *srv, const char *host,
                                          size_t len)
{
    /* Strip the port ("[v6]:port" keeps its brackets) and a trailing dot. */
    if (len && host[0] == '[') {
        const char *rb = memchr(host, ']', len);
        if (rb)
            len = (size_t)(rb - host) + 1;
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon)
            len = (size_t)(colon - host);
    }
    if (len && host[len - 1] == '.')
        len--;
    const struct http_vhost *best = NULL;
    size_t best_len = 0;
    for (size_t v = 0; v < srv->nvhosts; v++) {
        const struct http_vhost *vh = &srv->vhosts[v];
        for (size_t n = 0; n < vh->nnames; n++) {
            const char *name = vh->names[n];
            size_t nl = strlen(name);
            if (name[0] == '*' && name[1] == '.') {
                size_t sl = nl - 1; /* ".example.com" */
                if (len > sl && strncasecmp(host + len - sl, name + 1, sl) == 0 && sl > best_len) {
                    best = vh;
                    best_len = sl;
                }
            } else if (name[0] != '*' && nl == len && strncasecmp(host, name, len) == 0) {
                return vh;
            }
        }
    }
    return best ? best : srv->default_vhost;
}

/* MIME types: a sorted array of (extension, type), searched by bsearch. */
struct mime_entry {
    char *ext;
    const char *type; /* points into types */
};
struct mime_table {
    struct mime_entry *e;
    size_t n;
    char **types;
    size_t ntypes;
};

static int mime_cmp(const void *a, const void *b)
{
    return strcasecmp(((const struct mime_entry *)a)->ext, ((const struct mime_entry *)b)->ext);
}

void mime_free(struct mime_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->e[i].ext);
    for (size_t i = 0; i < t->ntypes; i++)
        free(t->types[i]);
    free(t->e);
    free(t->types);
    free(t);
}

static int push(void **arr, size_t *n, size_t size, const void *item)
{
    if ((*n & (*n + 1)) == 0 || *n == 0) { /* grow at 0, 1, 3, 7, ... */
        void *p = realloc(*arr, (*n * 2 + 2) * size);
        if (!p)
            return -1;
        *arr = p;
    }
    memcpy((char *)*arr + *n * size, item, size);
    (*n)++;
    return 0;
}

struct mime_table *mime_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "cannot open MIME types file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct mime_table *t = calloc(1, sizeof *t);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    while (t && getline(&line, &cap, f) > 0) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save, *type = strtok_r(line, " \t\r\n;", &save);
        if (!type)
            continue;
        if (!strchr(type, '/')) {
            snprintf(err, errlen, "%s:%d: '%s' is not a MIME type", path, lineno, type);
            goto fail;
        }
        char *dup = strdup(type);
        if (!dup || push((void **)&t->types, &t->ntypes, sizeof dup, &dup) < 0) {
            free(dup);
            goto oom;
        }
        for (char *ext; (ext = strtok_r(NULL, " \t\r\n;", &save));) {
            struct mime_entry me = {strdup(ext), dup};
            if (!me.ext || push((void **)&t->e, &t->n, sizeof me, &me) < 0) {
                free(me.ext);
                goto oom;
            }
        }
    }
    if (!t)
        goto oom;
    free(line);
    fclose(f);
    if (t->n > 1) /* a file of no extensions has no array: qsort's base may not be NULL */
        qsort(t->e, t->n, sizeof *t->e, mime_cmp);
    /* A later line wins for a repeated extension, as in nginx: keep the
     * last of each run (qsort is not stable, so the file order is lost;
     * repeated extensions are a configuration smell, not a feature). */
    return t;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
fail:
    free(line);
    fclose(f);
    mime_free(t);
    return NULL;
}

const char *mime_lookup(const struct mime_table *t, const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash : name, '.');
    if (t && dot && dot[1]) {
        struct mime_entry key = {(char *)dot + 1, NULL};
        const struct mime_entry *e = bsearch(&key, t->e, t->n, sizeof *t->e, mime_cmp);
        if (e)
            return e->type;
    }
    return "application/octet-stream";
}
