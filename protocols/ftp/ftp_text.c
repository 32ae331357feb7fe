/* Pure text work of the FTP module; see ftp_impl.h. No state, any thread. */
#include "protocols/ftp/ftp_impl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IAC 0xff

size_t ftp_strip_telnet(char *line, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch != IAC) {
            line[o++] = (char)ch;
            continue;
        }
        if (i + 1 < len && (unsigned char)line[i + 1] == IAC) {
            line[o++] = (char)IAC; /* an escaped 0xff, part of a UTF-8 name */
            i++;
            continue;
        }
        /* IAC IP, IAC DM, IAC WILL x...: the command byte, and the option
         * byte of the three-byte negotiations, go too. */
        if (i + 1 < len) {
            unsigned char cmd = (unsigned char)line[++i];
            if (cmd >= 251 && cmd <= 254 && i + 1 < len)
                i++;
        }
    }
    return o;
}

int ftp_split(char *line, size_t len, char verb[5], char **arg)
{
    if (memchr(line, '\0', len))
        return -1;
    size_t v = 0;
    while (v < len && line[v] != ' ') {
        if (v == 4 || !isalpha((unsigned char)line[v]))
            return -1;
        verb[v] = (char)toupper((unsigned char)line[v]);
        v++;
    }
    if (v < 3)
        return -1;
    verb[v] = '\0';
    line[len] = '\0';
    *arg = v < len ? line + v + 1 : line + len;
    return 0;
}

int ftp_vpath(const char *cwd, const char *arg, char *out, size_t outlen)
{
    if (outlen < 2)
        return -1;
    size_t o = 0;
    out[o++] = '/';
    const char *parts[2] = {arg[0] == '/' ? "" : cwd, arg};
    for (int p = 0; p < 2; p++) {
        const char *s = parts[p];
        while (*s) {
            while (*s == '/')
                s++;
            const char *e = s;
            while (*e && *e != '/')
                e++;
            size_t n = (size_t)(e - s);
            if (n == 0 || (n == 1 && s[0] == '.')) {
                /* nothing */
            } else if (n == 2 && s[0] == '.' && s[1] == '.') {
                if (o > 1) {
                    o--; /* the trailing slash */
                    while (o > 1 && out[o - 1] != '/')
                        o--;
                }
            } else {
                if (o + n + 1 >= outlen)
                    return -1;
                memcpy(out + o, s, n);
                o += n;
                out[o++] = '/';
            }
            s = e;
        }
    }
    if (o > 1)
        o--; /* no trailing slash */
    out[o] = '\0';
    return 0;
}

static int parse_num(const char **p, unsigned max, unsigned *out)
{
    const char *s = *p;
    unsigned v = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (unsigned)(*s++ - '0');
        if (v > max)
            return -1;
    }
    *p = s;
    *out = v;
    return 0;
}

int ftp_parse_port(const char *arg, struct sockaddr_storage *ss, socklen_t *len)
{
    unsigned b[6];
    const char *p = arg;
    while (*p == ' ')
        p++;
    for (int i = 0; i < 6; i++) {
        if (parse_num(&p, 255, &b[i]) < 0)
            return -1;
        if (i < 5 && *p++ != ',')
            return -1;
    }
    while (*p == ' ')
        p++;
    if (*p)
        return -1;
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof *ss);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
    sin->sin_port = htons((uint16_t)(b[4] << 8 | b[5]));
    *len = sizeof *sin;
    return 0;
}

int ftp_parse_eprt(const char *arg, struct sockaddr_storage *ss, socklen_t *len)
{
    /* |af|address|port| with any printable delimiter (RFC 2428) */
    char d = arg[0];
    if (d < 33 || d > 126 || isdigit((unsigned char)d))
        return -1;
    const char *p = arg + 1;
    unsigned af, port;
    if (parse_num(&p, 2, &af) < 0 || *p++ != d || (af != 1 && af != 2))
        return -1;
    const char *end = strchr(p, d);
    if (!end || end - p >= INET6_ADDRSTRLEN)
        return -1;
    char addr[INET6_ADDRSTRLEN];
    memcpy(addr, p, (size_t)(end - p));
    addr[end - p] = '\0';
    p = end + 1;
    if (parse_num(&p, 65535, &port) < 0 || *p++ != d || *p || port == 0)
        return -1;
    memset(ss, 0, sizeof *ss);
    if (af == 1) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
            return -1;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof *sin6;
    }
    return 0;
}

static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static char type_char(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFDIR:
        return 'd';
    case S_IFLNK:
        return 'l';
    case S_IFCHR:
        return 'c';
    case S_IFBLK:
        return 'b';
    case S_IFIFO:
        return 'p';
    case S_IFSOCK:
        return 's';
    default:
        return '-';
    }
}

size_t ftp_list_line(char *out, size_t len, const char *name, const struct stat *st,
                     const char *link, time_t now)
{
    mode_t m = st->st_mode;
    char perms[11] = {type_char(m),
                      m & S_IRUSR ? 'r' : '-',
                      m & S_IWUSR ? 'w' : '-',
                      (m & S_ISUID) ? (m & S_IXUSR ? 's' : 'S') : (m & S_IXUSR ? 'x' : '-'),
                      m & S_IRGRP ? 'r' : '-',
                      m & S_IWGRP ? 'w' : '-',
                      (m & S_ISGID) ? (m & S_IXGRP ? 's' : 'S') : (m & S_IXGRP ? 'x' : '-'),
                      m & S_IROTH ? 'r' : '-',
                      m & S_IWOTH ? 'w' : '-',
                      (m & S_ISVTX) ? (m & S_IXOTH ? 't' : 'T') : (m & S_IXOTH ? 'x' : '-'),
                      '\0'};
    struct tm tm;
    gmtime_r(&st->st_mtime, &tm);
    char when[40];
    /* ls: the time for the last six months (and a little future), else the year */
    long age = (long)(now - st->st_mtime);
    if (age > -3600 && age < 180L * 86400)
        snprintf(when, sizeof when, "%s %2d %02d:%02d", months[tm.tm_mon], tm.tm_mday, tm.tm_hour,
                 tm.tm_min);
    else
        snprintf(when, sizeof when, "%s %2d  %4d", months[tm.tm_mon], tm.tm_mday,
                 tm.tm_year + 1900);
    int n = snprintf(out, len, "%s %3lu %-8u %-8u %8lld %s %s%s%s\r\n", perms,
                     (unsigned long)st->st_nlink, (unsigned)st->st_uid, (unsigned)st->st_gid,
                     (long long)st->st_size, when, name, link ? " -> " : "", link ? link : "");
    if (n < 0 || len < 3)
        return 0;
    if ((size_t)n >= len) /* a name too long to list: cut, but end the line */
        n = (int)len - 1;
    ftp_clean(out, (size_t)n - 2);
    out[n - 2] = '\r';
    out[n - 1] = '\n';
    out[n] = '\0';
    return (size_t)n;
}

size_t ftp_facts(char *out, size_t len, const struct stat *st, unsigned perms, unsigned mask)
{
    int dir = S_ISDIR(st->st_mode);
    char perm[12];
    size_t p = 0;
    if (dir) {
        perm[p++] = 'e';
        if (perms & USER_READ)
            perm[p++] = 'l';
        if (perms & USER_WRITE)
            perm[p++] = 'c';
        if (perms & USER_MKDIR)
            perm[p++] = 'm';
        if (perms & USER_DELETE)
            perm[p++] = 'd', perm[p++] = 'p';
    } else {
        if (perms & USER_READ)
            perm[p++] = 'r';
        if (perms & USER_WRITE)
            perm[p++] = 'a', perm[p++] = 'w';
        if (perms & USER_DELETE)
            perm[p++] = 'd';
    }
    if (perms & USER_RENAME)
        perm[p++] = 'f';
    perm[p] = '\0';
    struct tm tm;
    gmtime_r(&st->st_mtime, &tm);
    const char *type = dir ? "dir" : S_ISREG(st->st_mode) ? "file" : "OS.unix=special";
    size_t o = 0;
    int n;
#define FACT(bit, ...)                                                                             \
    if ((mask & (bit)) && o < len && (n = snprintf(out + o, len - o, __VA_ARGS__)) > 0)            \
        o = o + (size_t)n < len ? o + (size_t)n : len - 1;
    FACT(FACT_TYPE, "type=%s;", type)
    FACT(FACT_SIZE, "size=%lld;", (long long)st->st_size)
    FACT(FACT_MODIFY, "modify=%04d%02d%02d%02d%02d%02d;", tm.tm_year + 1900, tm.tm_mon + 1,
         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
    FACT(FACT_PERM, "perm=%s;", perm)
    FACT(FACT_UNIQUE, "unique=%llxg%llx;", (unsigned long long)st->st_dev,
         (unsigned long long)st->st_ino)
#undef FACT
    if (len)
        out[o < len ? o : len - 1] = '\0';
    return o;
}

void ftp_clean(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n')
            s[i] = '?';
}

size_t ftp_quote(char *out, size_t len, const char *path)
{
    size_t o = 0;
    for (const char *p = path; *p && o + 2 < len; p++) {
        out[o++] = *p;
        if (*p == '"')
            out[o++] = '"';
    }
    if (len)
        out[o] = '\0';
    return o;
}
