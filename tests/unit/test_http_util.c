/* protocols/http/http_util: path normalisation, dates, ranges, virtual
 * host matching, MIME lookup. */
#include "core/fs.h"
#include "protocols/http/http.h"
#include "protocols/http/http_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

static void norm_ok(const char *in, const char *want)
{
    char out[256];
    long n = http_path_normalize(in, strlen(in), out);
    if (n < 0 || strcmp(out, want) != 0 || (size_t)n != strlen(want))
        fail_msg("normalize(%s) = %ld '%s', want '%s'", in, n, n >= 0 ? out : "", want);
}

static void norm_err(const char *in, size_t len, long want)
{
    char out[256];
    long n = http_path_normalize(in, len, out);
    if (n != want)
        fail_msg("normalize(%.*s) = %ld, want %ld", (int)len, in, n, want);
}

static void test_normalize(void **state)
{
    (void)state;
    norm_ok("/", "/");
    norm_ok("/a/b", "/a/b");
    norm_ok("/a/b/", "/a/b/");
    norm_ok("//a///b", "/a/b");
    norm_ok("/a/./b", "/a/b");
    norm_ok("/a/.", "/a/");
    norm_ok("/a/b/..", "/a/");
    norm_ok("/a/../b", "/b");
    norm_ok("/a/b/../../c", "/c");
    norm_ok("/%41%62c", "/Abc");
    norm_ok("/a%20b", "/a b");
    norm_ok("/...", "/...");
    norm_ok("/.hidden", "/.hidden");
    norm_ok("/a/%2e/b", "/a/b");
    norm_ok("/a/%2E%2e/b", "/b");
    norm_err("/..", 3, -403);
    norm_err("/../etc/passwd", 14, -403);
    norm_err("/a/../../etc", 12, -403);
    norm_err("/%2e%2e/etc", 11, -403);
    norm_err("/a/%2E%2E/%2e%2e/x", 18, -403);
    norm_err("/a%2fb", 6, -404);
    norm_err("/a%2Fb", 6, -404);
    norm_err("/a%00b", 6, -400);
    norm_err("/a\0b", 4, -400);
    norm_err("/a%zz", 5, -400);
    norm_err("/a%4", 4, -400);
    norm_err("a/b", 3, -400);
    norm_err("", 0, -400);
}

static void test_dates(void **state)
{
    (void)state;
    char buf[HTTP_DATE_LEN + 1];
    http_date_format(784111777, buf);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    http_date_format(0, buf);
    assert_string_equal(buf, "Thu, 01 Jan 1970 00:00:00 GMT");
    const char *s = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_int_equal(http_date_parse(s, strlen(s)), 784111777);
    s = "Sunday, 06-Nov-94 08:49:37 GMT";
    assert_int_equal(http_date_parse(s, strlen(s)), 784111777);
    s = "Sun Nov  6 08:49:37 1994";
    assert_int_equal(http_date_parse(s, strlen(s)), 784111777);
    const char *bad[] = {"",
                         "yesterday",
                         "Sun, 06 Nov 1994 08:49:37",
                         "Sun, 32 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 25:49:37 GMT",
                         "Sun, 06 Nov 1994 08:49:37 GMT trailing"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (http_date_parse(bad[i], strlen(bad[i])) != -1)
            fail_msg("accepted date '%s'", bad[i]);
    for (time_t t = 0; t < 4000000000; t += 86400 * 367 + 3601) { /* round trip */
        http_date_format(t, buf);
        assert_int_equal(http_date_parse(buf, HTTP_DATE_LEN), t);
    }
}

static void range(const char *h, off_t size, int want, off_t ws, off_t we)
{
    off_t s = -7, e = -7;
    int rc = http_range_parse(h, strlen(h), size, &s, &e);
    if (rc != want || (rc == 1 && (s != ws || e != we)))
        fail_msg("range(%s, %lld) = %d [%lld,%lld), want %d [%lld,%lld)", h, (long long)size, rc,
                 (long long)s, (long long)e, want, (long long)ws, (long long)we);
}

static void test_ranges(void **state)
{
    (void)state;
    range("bytes=0-9", 100, 1, 0, 10);
    range("bytes=10-", 100, 1, 10, 100);
    range("bytes=-10", 100, 1, 90, 100);
    range("bytes=-1000", 100, 1, 0, 100);
    range("bytes=90-1000", 100, 1, 90, 100);
    range("bytes=99-99", 100, 1, 99, 100);
    range("BYTES=0-0", 100, 1, 0, 1);
    range("bytes=100-", 100, -1, 0, 0);
    range("bytes=200-300", 100, -1, 0, 0);
    range("bytes=-0", 100, -1, 0, 0);
    range("bytes=0-", 0, -1, 0, 0);
    range("bytes=5-1", 100, 0, 0, 0);
    range("bytes=0-1,5-6", 100, 0, 0, 0);
    range("items=0-1", 100, 0, 0, 0);
    range("bytes=a-b", 100, 0, 0, 0);
    range("bytes=", 100, 0, 0, 0);
    range("bytes=1-2x", 100, 0, 0, 0);
    range("bytes=99999999999999999999999-", 100, 0, 0, 0);
}

static void test_vhosts(void **state)
{
    (void)state;
    char *n0[] = {"example.com", "www.example.com"};
    char *n1[] = {"*.example.com"};
    char *n2[] = {"*.api.example.com"};
    char *n3[] = {"*"};
    struct http_vhost v[4] = {
        {n0, 2, NULL, 0}, {n1, 1, NULL, 0}, {n2, 1, NULL, 0}, {n3, 1, NULL, 0}};
    struct http_server srv = {.vhosts = v, .nvhosts = 4, .default_vhost = &v[3]};
#define HOST(s) http_vhost_match(&srv, s, strlen(s))
    assert_ptr_equal(HOST("example.com"), &v[0]);
    assert_ptr_equal(HOST("EXAMPLE.com:8080"), &v[0]);
    assert_ptr_equal(HOST("www.example.com."), &v[0]);
    assert_ptr_equal(HOST("img.example.com"), &v[1]);
    assert_ptr_equal(HOST("a.b.example.com"), &v[1]);
    assert_ptr_equal(HOST("v1.api.example.com"), &v[2]);
    assert_ptr_equal(HOST("api.example.com"), &v[1]);
    assert_ptr_equal(HOST("badexample.com"), &v[3]);
    assert_ptr_equal(HOST("other.org"), &v[3]);
    assert_ptr_equal(HOST(""), &v[3]);
    assert_ptr_equal(HOST("[::1]:8080"), &v[3]);
    srv.default_vhost = &v[0];
    assert_ptr_equal(HOST("other.org"), &v[0]);
}

static void test_mime(void **state)
{
    (void)state;
    char path[] = "/tmp/medusa-test-mime-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text =
        "# comment\ntext/html html htm\nimage/png png\n\napplication/json json # x\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char err[256];
    struct mime_table *t = mime_load(path, err, sizeof err);
    assert_non_null(t);
    assert_string_equal(mime_lookup(t, "/a/index.html"), "text/html");
    assert_string_equal(mime_lookup(t, "x.HTM"), "text/html");
    assert_string_equal(mime_lookup(t, "a.b/c.png"), "image/png");
    assert_string_equal(mime_lookup(t, "data.json"), "application/json");
    assert_string_equal(mime_lookup(t, "noext"), "application/octet-stream");
    assert_string_equal(mime_lookup(t, "dir.html/noext"), "application/octet-stream");
    assert_string_equal(mime_lookup(t, "trailing."), "application/octet-stream");
    assert_string_equal(mime_lookup(t, "x.unknown"), "application/octet-stream");
    assert_string_equal(mime_lookup(NULL, "x.html"), "application/octet-stream");
    mime_free(t);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "nonsense here\n", 14), 14);
    close(fd);
    assert_null(mime_load(path, err, sizeof err));
    assert_non_null(strstr(err, ":1:"));
    unlink(path);
    assert_null(mime_load(path, err, sizeof err));
}

static void test_open_beneath(void **state)
{
    (void)state;
    char dir[] = "/tmp/medusa-test-beneath-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof path, "%s/root", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/root/sub", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/secret", dir);
    close(open(path, O_WRONLY | O_CREAT, 0600));
    snprintf(path, sizeof path, "%s/root/sub/file", dir);
    close(open(path, O_WRONLY | O_CREAT, 0600));
    snprintf(path, sizeof path, "%s/root/out", dir);
    assert_int_equal(symlink("../secret", path), 0);
    snprintf(path, sizeof path, "%s/root/abs", dir);
    char target[512];
    snprintf(target, sizeof target, "%s/secret", dir);
    assert_int_equal(symlink(target, path), 0);
    snprintf(path, sizeof path, "%s/root/in", dir);
    assert_int_equal(symlink("sub/file", path), 0);
    snprintf(path, sizeof path, "%s/root", dir);
    int root = open(path, O_PATH | O_DIRECTORY);
    assert_true(root >= 0);
    int fd = fs_open_beneath(root, "sub/file", O_RDONLY, 0);
    assert_true(fd >= 0);
    close(fd);
    /* cppcheck 2.10 does not see fd assigned again inside assert_true */
    assert_true((fd = fs_open_beneath(root, "in", O_RDONLY, 0)) >= 0); /* inside: fine */
    close(fd); /* cppcheck-suppress doubleFree */
    assert_true((fd = fs_open_beneath(root, "", O_PATH | O_DIRECTORY, 0)) >= 0);
    close(fd); /* cppcheck-suppress doubleFree */
    const char *escapes[] = {"out", "abs", "../secret", "sub/../../secret"};
    for (size_t i = 0; i < sizeof escapes / sizeof *escapes; i++) {
        errno = 0;
        if (fs_open_beneath(root, escapes[i], O_RDONLY, 0) >= 0 ||
            (errno != EXDEV && errno != ELOOP))
            fail_msg("'%s' was not refused (errno %d)", escapes[i], errno);
    }
    assert_true((fd = fs_open_beneath(root, "out", O_RDONLY, 1)) >= 0); /* allowed */
    close(fd);
    assert_true(fs_open_beneath(root, "missing", O_RDONLY, 0) < 0 && errno == ENOENT);
    close(root);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_sbuf_escape(void **state)
{
    (void)state;
    struct sbuf sb = {0};
    sb_add_html(&sb, "<a href=\"x\">&'</a>", 18);
    assert_string_equal(sb.p, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    sb_free(&sb);
    sb_add_urlpath(&sb, "/a b/%?#\"", 9);
    assert_string_equal(sb.p, "/a%20b/%25%3F%23%22");
    sb_free(&sb);
    for (int i = 0; i < 1000; i++)
        sb_addf(&sb, "%d,", i);
    assert_false(sb.failed);
    assert_int_equal(strlen(sb.p), sb.len);
    sb_free(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),    cmocka_unit_test(test_dates),
        cmocka_unit_test(test_ranges),       cmocka_unit_test(test_vhosts),
        cmocka_unit_test(test_mime),         cmocka_unit_test(test_sbuf_escape),
        cmocka_unit_test(test_open_beneath),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
