/* core/listener: parsing of every address form and its errors. */
#include "core/listener.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

static void parses(const char *spec, const char *base, int family, const char *text)
{
    struct listen_addr a;
    char err[256] = "";
    int rc = listen_addr_parse(spec, base, &a, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: %s", spec, err);
    assert_int_equal(a.family, family);
    assert_string_equal(a.text, text);
}

static void refuses(const char *spec, const char *fragment)
{
    struct listen_addr a;
    char err[256] = "";
    assert_int_equal(listen_addr_parse(spec, "/etc", &a, err, sizeof err), -1);
    if (!strstr(err, fragment))
        fail_msg("%s: error '%s' lacks '%s'", spec, err, fragment);
}

static void good_forms(void **state)
{
    (void)state;
    parses("127.0.0.1:8080", NULL, AF_INET, "127.0.0.1:8080");
    parses("*:21", NULL, AF_INET, "0.0.0.0:21");
    parses("[::1]:8080", NULL, AF_INET6, "[::1]:8080");
    parses("[::]:65535", NULL, AF_INET6, "[::]:65535");
    parses("[0:0::1]:1", NULL, AF_INET6, "[::1]:1");
    parses("unix:/run/medusa/chat.sock", "/etc", AF_UNIX, "unix:/run/medusa/chat.sock");
    parses("unix:run/chat.sock", "/etc/medusa", AF_UNIX, "unix:/etc/medusa/run/chat.sock");
}

static void bad_forms(void **state)
{
    (void)state;
    refuses("127.0.0.1", "expected HOST:PORT");
    refuses("127.0.0.1:0", "bad port");
    refuses("127.0.0.1:65536", "bad port");
    refuses("127.0.0.1:80x", "bad port");
    refuses("127.0.0.1:", "bad port");
    refuses("localhost:80", "bad IPv4 address");
    refuses("300.1.1.1:80", "bad IPv4 address");
    refuses("::1:80", "expected HOST:PORT");
    refuses("[::1]80", "expected [IPv6]:PORT");
    refuses("[::1", "expected [IPv6]:PORT");
    refuses("[1.2.3.4]:80", "bad IPv6 address");
    refuses("unix:", "empty Unix socket path");
    char longpath[200];
    memset(longpath, 'a', sizeof longpath);
    memcpy(longpath, "unix:/", 6);
    longpath[sizeof longpath - 1] = 0;
    refuses(longpath, "too long");
}

static void opens_and_reuses_port(void **state)
{
    (void)state;
    struct listen_addr a;
    char err[256];
    assert_int_equal(listen_addr_parse("127.0.0.1:1", NULL, &a, err, sizeof err), 0);
    /* Bind to an ephemeral port, then open a second socket on the same one:
     * SO_REUSEPORT must let both in, as every worker needs. */
    ((struct sockaddr_in *)&a.ss)->sin_port = 0;
    int fd = listener_open(&a, 16, err, sizeof err);
    assert_true(fd >= 0);
    socklen_t len = sizeof a.ss;
    getsockname(fd, (struct sockaddr *)&a.ss, &len);
    int fd2 = listener_open(&a, 16, err, sizeof err);
    if (fd2 < 0)
        fail_msg("second SO_REUSEPORT socket: %s", err);
    close(fd);
    close(fd2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_forms),
        cmocka_unit_test(bad_forms),
        cmocka_unit_test(opens_and_reuses_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
