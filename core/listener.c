/*
 * Address parsing and listening sockets; see listener.h.
 */
#include "core/listener.h"

#include "core/sbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int parse_port(const char *s, int *port)
{
    if (!*s || strlen(s) > 5)
        return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

static int parse_unix(const char *path, const char *base_dir, struct listen_addr *out, char *err,
                      size_t errlen)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
    char full[PATH_MAX];
    if (!*path) {
        snprintf(err, errlen, "empty Unix socket path");
        return -1;
    }
    int n = (path[0] == '/' || !base_dir) ? snprintf(full, sizeof full, "%s", path)
                                          : snprintf(full, sizeof full, "%s/%s", base_dir, path);
    if (n < 0 || (size_t)n >= sizeof sun->sun_path) {
        snprintf(err, errlen, "Unix socket path too long (at most %zu bytes): %s",
                 sizeof sun->sun_path - 1, path);
        return -1;
    }
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, full, (size_t)n + 1);
    out->len = (socklen_t)sizeof *sun;
    out->family = AF_UNIX;
    snprintf(out->text, sizeof out->text, "unix:%.*s", n, full);
    return 0;
}

static int parse_addr(const char *spec, const char *base_dir, struct listen_addr *out, char *err,
                      size_t errlen);

int listen_addr_parse(const char *spec, const char *base_dir, struct listen_addr *out, char *err,
                      size_t errlen)
{
    static const char flag[] = " proxy_protocol";
    size_t n = strlen(spec), fl = sizeof flag - 1;
    if (n > fl && strcmp(spec + n - fl, flag) == 0) {
        char *addr = strndup(spec, n - fl);
        if (!addr) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        int rc = parse_addr(addr, base_dir, out, err, errlen);
        free(addr);
        out->proxy_protocol = rc == 0;
        return rc;
    }
    return parse_addr(spec, base_dir, out, err, errlen);
}

static int parse_addr(const char *spec, const char *base_dir, struct listen_addr *out, char *err,
                      size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strncmp(spec, LIT("unix:")) == 0)
        return parse_unix(spec + 5, base_dir, out, err, errlen);

    char host[INET6_ADDRSTRLEN + 2];
    const char *colon;
    int port;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof host) {
            snprintf(err, errlen, "bad address '%s': expected [IPv6]:PORT", spec);
            return -1;
        }
        memcpy(host, spec + 1, (size_t)(close - spec - 1));
        host[close - spec - 1] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof host || strchr(spec, ':') != colon) {
            snprintf(err, errlen, "bad address '%s': expected HOST:PORT, [IPv6]:PORT or unix:PATH",
                     spec);
            return -1;
        }
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = 0;
    }
    if (parse_port(colon + 1, &port) < 0) {
        snprintf(err, errlen, "bad port in '%s': expected 1-65535", spec);
        return -1;
    }
    if (spec[0] == '[') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) {
            snprintf(err, errlen, "bad IPv6 address '%s'", host);
            return -1;
        }
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        out->len = sizeof *s6;
        out->family = AF_INET6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
        if (strcmp(host, "*") == 0) {
            s4->sin_addr.s_addr = htonl(INADDR_ANY);
        } else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
            snprintf(err, errlen, "bad IPv4 address '%s' (names are not resolved)", host);
            return -1;
        }
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        out->len = sizeof *s4;
        out->family = AF_INET;
    }
    sockaddr_text((struct sockaddr *)&out->ss, out->len, out->text, sizeof out->text);
    return 0;
}

void sockaddr_text(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    char ip[INET6_ADDRSTRLEN];
    (void)len;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        snprintf(buf, buflen, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        snprintf(buf, buflen, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(buf, buflen, "unix");
    } else {
        snprintf(buf, buflen, "?");
    }
}

/* A Unix path left behind by a process that died is removed; one that a
 * live server answers on is an error, as is anything that is not a socket. */
static int clear_stale_unix(const struct listen_addr *a, char *err, size_t errlen)
{
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
    struct stat st;
    if (lstat(sun->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", sun->sun_path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r = connect(fd, (const struct sockaddr *)sun, a->len);
    close(fd);
    if (r == 0) {
        snprintf(err, errlen, "%s is in use by another server", sun->sun_path);
        return -1;
    }
    unlink(sun->sun_path);
    return 0;
}

int listener_open(const struct listen_addr *a, int backlog, char *err, size_t errlen)
{
    err[0] = 0;
    if (a->family == AF_UNIX && clear_stale_unix(a, err, errlen) < 0) {
        if (!err[0])
            snprintf(err, errlen, "%s: %s", a->text, strerror(errno));
        return -1;
    }
    int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket for %s: %s", a->text, strerror(errno));
        return -1;
    }
    int one = 1;
    if (a->family != AF_UNIX) {
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
            (a->family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)) {
            snprintf(err, errlen, "setsockopt on %s: %s", a->text, strerror(errno));
            close(fd);
            return -1;
        }
    }
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
        snprintf(err, errlen, "bind %s: %s", a->text, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
        close(fd);
        if (a->family == AF_UNIX)
            listener_unlink(a);
        return -1;
    }
    return fd;
}

void listener_unlink(const struct listen_addr *a)
{
    if (a->family == AF_UNIX)
        unlink(((const struct sockaddr_un *)&a->ss)->sun_path);
}
