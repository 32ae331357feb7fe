/* The proxy's server addresses and records (protocols/http/proxy). */
#include "protocols/http/proxy/upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <cmocka.h>

static void test_server_forms(void **state)
{
    (void)state;
    struct px_server s;
    char err[256];

    assert_int_equal(px_server_parse("127.0.0.1:9000", NULL, &s, err, sizeof err), 0);
    assert_int_equal(s.kind, PX_INET);
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&s.ss;
    assert_int_equal(s4->sin_family, AF_INET);
    assert_int_equal(ntohs(s4->sin_port), 9000);

    assert_int_equal(px_server_parse("[::1]:81", NULL, &s, err, sizeof err), 0);
    assert_int_equal(s.kind, PX_INET);
    assert_int_equal(((const struct sockaddr_in6 *)&s.ss)->sin6_family, AF_INET6);

    assert_int_equal(px_server_parse("unix:/run/app.sock", NULL, &s, err, sizeof err), 0);
    assert_int_equal(s.kind, PX_UNIX);
    assert_string_equal(((const struct sockaddr_un *)&s.ss)->sun_path, "/run/app.sock");

    assert_int_equal(px_server_parse("app.internal:8080", NULL, &s, err, sizeof err), 0);
    assert_int_equal(s.kind, PX_NAME);
    assert_string_equal(s.host, "app.internal");
    assert_int_equal(s.port, 8080);
    free(s.host);

    const char *bad[] = {"app.internal",
                         "app:0",
                         "app:65536",
                         ":80",
                         "a b:80",
                         "app:80x",
                         "127.0.0.1:80 proxy_protocol",
                         "x/y:80",
                         ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (px_server_parse(bad[i], NULL, &s, err, sizeof err) == 0)
            fail_msg("'%s' was accepted", bad[i]);
}

static void test_records_survive_by_name(void **state)
{
    (void)state;
    struct px_rec *a = px_rec_for("app", "127.0.0.1:1");
    struct px_rec *b = px_rec_for("app", "127.0.0.1:2");
    struct px_rec *c = px_rec_for("other", "127.0.0.1:1");
    assert_non_null(a);
    assert_ptr_not_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_ptr_equal(px_rec_for("app", "127.0.0.1:1"), a); /* a reload finds it again */
    assert_ptr_equal(px_rec_by_id(a->id), a);
    assert_ptr_equal(px_rec_by_id(c->id), c);
    assert_null(px_rec_by_id(px_rec_count()));
    assert_string_equal(px_err_text(PXE_READ_TIMEOUT), "read timed out");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_server_forms),
                                       cmocka_unit_test(test_records_survive_by_name)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
