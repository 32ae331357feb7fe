/* core/proxyproto: PROXY protocol v1 and v2 headers, whole, cut short at
 * every byte, and malformed. */
#include "core/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static enum proxy_result parse(const void *buf, size_t len, struct sockaddr_storage *ss,
                               size_t *used)
{
    socklen_t sl;
    const char *why;
    return proxy_header_parse(buf, len, ss, &sl, used, &why);
}

/* Every prefix of a good header asks for more; the whole one is done. */
static void whole_and_prefixes(const void *hdr, size_t len, size_t extra)
{
    struct sockaddr_storage ss;
    size_t used = 0;
    for (size_t i = 0; i < len; i++)
        if (parse(hdr, i, &ss, &used) != PROXY_MORE)
            fail_msg("prefix of %zu bytes not PROXY_MORE", i);
    assert_int_equal(parse(hdr, len + extra, &ss, &used), PROXY_DONE);
    assert_int_equal(used, len);
}

static void test_v1(void **state)
{
    (void)state;
    char buf[256];
    const char *h = "PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\n";
    snprintf(buf, sizeof buf, "%sGET / HTTP/1.1\r\n", h);
    whole_and_prefixes(buf, strlen(h), 16);
    struct sockaddr_storage ss;
    size_t used;
    parse(buf, strlen(buf), &ss, &used);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    assert_int_equal(s4->sin_family, AF_INET);
    assert_int_equal(ntohs(s4->sin_port), 51000);
    assert_int_equal(ntohl(s4->sin_addr.s_addr), 0xcb007107);

    h = "PROXY TCP6 2001:db8::1 ::1 4242 443\r\n";
    whole_and_prefixes(h, strlen(h), 0);
    parse(h, strlen(h), &ss, &used);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 4242);

    h = "PROXY UNKNOWN\r\n";
    assert_int_equal(parse(h, strlen(h), &ss, &used), PROXY_DONE);
    assert_int_equal(ss.ss_family, AF_UNSPEC);
    h = "PROXY UNKNOWN ffff::1 ::1 1 2\r\n";
    assert_int_equal(parse(h, strlen(h), &ss, &used), PROXY_DONE);

    const char *bad[] = {
        "GET / HTTP/1.1\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",     /* bare LF */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",     /* a field short */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", /* one too many */
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  /* double space */
        "PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n",
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], strlen(bad[i]), &ss, &used) != PROXY_BAD)
            fail_msg("accepted: %s", bad[i]);
    char longline[200] = "PROXY TCP4 ";
    memset(longline + 11, '1', 150);
    assert_int_equal(parse(longline, 161, &ss, &used), PROXY_BAD); /* no CRLF in 107 */
}

static size_t v2(unsigned char *out, unsigned char cmd, unsigned char fam, const void *addr,
                 size_t alen)
{
    static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                          0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    memcpy(out, sig, 12);
    out[12] = cmd;
    out[13] = fam;
    out[14] = (unsigned char)(alen >> 8);
    out[15] = (unsigned char)alen;
    memcpy(out + 16, addr, alen);
    return 16 + alen;
}

static void test_v2(void **state)
{
    (void)state;
    unsigned char buf[2048], a4[12 + 8] = {198, 51, 100, 9, 127, 0, 0, 1, 0x10, 0x92, 0x1f, 0x90};
    /* with 8 bytes of TLV after the addresses */
    size_t n = v2(buf, 0x21, 0x11, a4, sizeof a4);
    /* bytes, not a string */
    memcpy(buf + n, "GET", 3); /* NOLINT(bugprone-not-null-terminated-result) */
    whole_and_prefixes(buf, n, 3);
    struct sockaddr_storage ss;
    size_t used;
    parse(buf, n, &ss, &used);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(s4->sin_port), 0x1092);
    assert_int_equal(ntohl(s4->sin_addr.s_addr), 0xc6336409);

    unsigned char a6[36] = {0x20, 0x01, 0x0d, 0xb8};
    a6[15] = 5;
    a6[32] = 0x12, a6[33] = 0x34;
    n = v2(buf, 0x21, 0x21, a6, sizeof a6);
    whole_and_prefixes(buf, n, 0);
    parse(buf, n, &ss, &used);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 0x1234);

    n = v2(buf, 0x20, 0x00, "", 0); /* LOCAL: a health check */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_DONE);
    assert_int_equal(ss.ss_family, AF_UNSPEC);

    n = v2(buf, 0x31, 0x11, a4, 12); /* version 3 */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_BAD);
    n = v2(buf, 0x22, 0x11, a4, 12); /* command 2 */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_BAD);
    n = v2(buf, 0x21, 0x11, a4, 8); /* addresses cut short */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_BAD);
    n = v2(buf, 0x21, 0x41, a4, 12); /* no such family */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_BAD);
    n = v2(buf, 0x21, 0x12, a4, 12); /* UDP: no peer of a stream */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_BAD);
    n = v2(buf, 0x21, 0x31, a4, 12); /* Unix addresses are 216 bytes */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_BAD);
    unsigned char big[1100] = {0};
    n = v2(buf, 0x21, 0x11, big, sizeof big); /* longer than we take */
    assert_int_equal(parse(buf, n, &ss, &used), PROXY_BAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_v1), cmocka_unit_test(test_v2)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
