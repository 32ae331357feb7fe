/*
 * Listening addresses: parsing the configuration's text forms and opening
 * sockets. Pure functions; any thread (in practice the supervisor).
 *
 * Forms: "127.0.0.1:8080", "*:8080" (all IPv4), "[::1]:8080", "[::]:8080",
 * "unix:PATH" (PATH relative to the configuration folder unless absolute).
 * TCP sockets get SO_REUSEPORT so that every worker can own one; Unix sockets
 * cannot, so one socket is shared (see core/worker.c for how).
 */
#pragma once

#include <stddef.h>
#include <sys/socket.h>

#define LISTEN_TEXT_MAX 160

struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int family;                 /* AF_INET, AF_INET6 or AF_UNIX */
    char text[LISTEN_TEXT_MAX]; /* canonical form, for logs and duplicate checks */
    int proxy_protocol;         /* "ADDRESS proxy_protocol": clients come through a
                                 * load balancer that sends a PROXY header first */
    int tls;                    /* from the service's tls_listen: TLS from the first byte */
};

/* "HOST:PORT", "[IPv6]:PORT" or "unix:PATH", optionally followed by
 * " proxy_protocol". 0, or -1 with a message in err. base_dir may be NULL
 * (cwd). */
int listen_addr_parse(const char *spec, const char *base_dir, struct listen_addr *out, char *err,
                      size_t errlen);

/* A non-blocking, close-on-exec listening socket, or -1 with err. */
int listener_open(const struct listen_addr *a, int backlog, char *err, size_t errlen);

/* Removes a Unix socket's path; no-op for TCP. */
void listener_unlink(const struct listen_addr *a);

/* "ip:port" or "[ip6]:port" or "unix" for a peer address. */
void sockaddr_text(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);
