/* A growable string; see sbuf.h. */
#include "core/sbuf.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sb_reserve(struct sbuf *sb, size_t more)
{
    if (sb->failed)
        return -1;
    if (sb->len + more + 1 <= sb->cap)
        return 0;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + more + 1)
        cap *= 2;
    char *p = realloc(sb->p, cap);
    if (!p) {
        sb->failed = 1;
        return -1;
    }
    sb->p = p;
    sb->cap = cap;
    return 0;
}

void sb_add(struct sbuf *sb, const char *s, size_t len)
{
    if (sb_reserve(sb, len) < 0)
        return;
    memcpy(sb->p + sb->len, s, len);
    sb->len += len;
    sb->p[sb->len] = '\0';
}

void sb_adds(struct sbuf *sb, const char *s)
{
    sb_add(sb, s, strlen(s));
}

void sb_addf(struct sbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_reserve(sb, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(sb->p + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void sb_add_html(struct sbuf *sb, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
        case '&':
            sb_adds(sb, "&amp;");
            break;
        case '<':
            sb_adds(sb, "&lt;");
            break;
        case '>':
            sb_adds(sb, "&gt;");
            break;
        case '"':
            sb_adds(sb, "&quot;");
            break;
        case '\'':
            sb_adds(sb, "&#39;");
            break;
        default:
            sb_add(sb, s + i, 1);
        }
    }
}

void sb_add_urlpath(struct sbuf *sb, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalnum(ch) || strchr("-._~/", ch))
            sb_add(sb, s + i, 1);
        else
            sb_addf(sb, "%%%02X", ch);
    }
}

void sb_add_json(struct sbuf *sb, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            sb_addf(sb, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            sb_addf(sb, "\\u%04x", ch);
        else
            sb_add(sb, s, 1);
    }
}

void sb_free(struct sbuf *sb)
{
    free(sb->p);
    sb->p = NULL;
    sb->len = sb->cap = 0;
}

void sb_add_bytes(struct sbuf *sb, unsigned long long n)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5)
        v /= 1024, u++;
    if (u == 0)
        sb_addf(sb, "%llu B", n);
    else
        sb_addf(sb, v < 10 ? "%.1f %s" : "%.0f %s", v, unit[u]);
}
