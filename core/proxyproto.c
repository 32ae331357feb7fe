/* The PROXY protocol header; see proxyproto.h. Pure: any thread. */
#include "core/proxyproto.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static enum proxy_result bad(const char **why, const char *what)
{
    *why = what;
    return PROXY_BAD;
}

/* A decimal port, 0-65535, no sign or leading zero beyond "0". */
static int v1_port(const char *s, size_t n, unsigned *out)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = v;
    return 0;
}

static enum proxy_result parse_v1(const unsigned char *buf, size_t len,
                                  struct sockaddr_storage *src, socklen_t *srclen, size_t *used,
                                  const char **why)
{
    /* "PROXY " TCP4|TCP6|UNKNOWN ... "\r\n", at most 107 bytes */
    const unsigned char *end = memchr(buf, '\n', len < 107 ? len : 107);
    if (!end) {
        if (len >= 107)
            return bad(why, "PROXY v1 line longer than 107 bytes");
        return PROXY_MORE;
    }
    if (end == buf || end[-1] != '\r')
        return bad(why, "PROXY v1 line not ended by CRLF");
    size_t n = (size_t)(end - buf) - 1; /* without CRLF */
    char line[108];
    memcpy(line, buf, n);
    line[n] = '\0';
    *used = n + 2;
    memset(src, 0, sizeof *src);
    if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' ')) {
        *srclen = 0;
        return PROXY_DONE;
    }
    char *f[6];
    int k = 0;
    for (char *p = line, *save = NULL; k < 6 && (p = strtok_r(p, " ", &save)); p = NULL)
        f[k++] = p;
    /* exactly single spaces: the rebuilt line must be the same length */
    size_t total = 0;
    for (int i = 0; i < k; i++)
        total += strlen(f[i]) + (i ? 1 : 0);
    if (k != 6 || total != n || strcmp(f[0], "PROXY") != 0)
        return bad(why, "malformed PROXY v1 line");
    unsigned sport, dport;
    if (v1_port(f[4], strlen(f[4]), &sport) < 0 || v1_port(f[5], strlen(f[5]), &dport) < 0)
        return bad(why, "bad port in PROXY v1 line");
    if (strcmp(f[1], "TCP4") == 0) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)src;
        struct in_addr d;
        if (inet_pton(AF_INET, f[2], &s4->sin_addr) != 1 || inet_pton(AF_INET, f[3], &d) != 1)
            return bad(why, "bad IPv4 address in PROXY v1 line");
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)sport);
        *srclen = sizeof *s4;
    } else if (strcmp(f[1], "TCP6") == 0) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)src;
        struct in6_addr d;
        if (inet_pton(AF_INET6, f[2], &s6->sin6_addr) != 1 || inet_pton(AF_INET6, f[3], &d) != 1)
            return bad(why, "bad IPv6 address in PROXY v1 line");
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)sport);
        *srclen = sizeof *s6;
    } else {
        return bad(why, "unknown protocol in PROXY v1 line");
    }
    return PROXY_DONE;
}

static enum proxy_result parse_v2(const unsigned char *buf, size_t len,
                                  struct sockaddr_storage *src, socklen_t *srclen, size_t *used,
                                  const char **why)
{
    if (len < 16)
        return PROXY_MORE;
    unsigned ver = buf[12] >> 4, cmd = buf[12] & 0x0f, fam = buf[13];
    size_t body = (size_t)buf[14] << 8 | buf[15];
    if (ver != 2)
        return bad(why, "PROXY v2 header of another version");
    if (cmd > 1)
        return bad(why, "PROXY v2 header with an unknown command");
    if (16 + body > PROXY_HEADER_MAX)
        return bad(why, "PROXY v2 header too long");
    if (len < 16 + body)
        return PROXY_MORE;
    *used = 16 + body;
    memset(src, 0, sizeof *src);
    *srclen = 0;
    const unsigned char *a = buf + 16;
    if (cmd == 0) /* LOCAL: the balancer's own connection (a health check) */
        return PROXY_DONE;
    switch (fam) {
    case 0x11: { /* TCP over IPv4 (UDP, 0x12 and 0x22, is no peer of a stream) */
        if (body < 12)
            return bad(why, "PROXY v2 IPv4 addresses cut short");
        struct sockaddr_in *s4 = (struct sockaddr_in *)src;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a, 4);
        memcpy(&s4->sin_port, a + 8, 2);
        *srclen = sizeof *s4;
        return PROXY_DONE;
    }
    case 0x21: {
        if (body < 36)
            return bad(why, "PROXY v2 IPv6 addresses cut short");
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)src;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
        memcpy(&s6->sin6_port, a + 32, 2);
        *srclen = sizeof *s6;
        return PROXY_DONE;
    }
    case 0x00: /* UNSPEC */
        return PROXY_DONE;
    case 0x31: /* Unix stream sockets: no address to show */
        if (body < 216)
            return bad(why, "PROXY v2 Unix addresses cut short");
        return PROXY_DONE;
    default:
        return bad(why, "PROXY v2 header with an unknown address family");
    }
}

enum proxy_result proxy_header_parse(const unsigned char *buf, size_t len,
                                     struct sockaddr_storage *src, socklen_t *srclen, size_t *used,
                                     const char **why)
{
    *why = NULL;
    size_t cmp = len < 12 ? len : 12;
    if (memcmp(buf, v2_sig, cmp) == 0)
        return len < 12 ? PROXY_MORE : parse_v2(buf, len, src, srclen, used, why);
    cmp = len < 6 ? len : 6;
    if (memcmp(buf, "PROXY ", cmp) == 0)
        return len < 6 ? PROXY_MORE : parse_v1(buf, len, src, srclen, used, why);
    return bad(why, "no PROXY protocol header");
}
