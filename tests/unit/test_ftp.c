/* protocols/ftp text work: command lines, Telnet sequences, virtual paths
 * (confinement starts here: no result leaves "/"), PORT/EPRT, LIST and
 * MLSx lines; and the users file's FTP fields. */
#include "core/config.h"
#include "core/users.h"
#include "protocols/ftp/ftp_impl.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

static void split_ok(const char *in, const char *verb, const char *arg)
{
    char line[256], v[5], *a;
    size_t len = strlen(in);
    memcpy(line, in, len + 1);
    if (ftp_split(line, len, v, &a) < 0)
        fail_msg("split(%s) refused", in);
    assert_string_equal(v, verb);
    assert_string_equal(a, arg);
}

static void split_bad(const char *in, size_t len)
{
    char line[256], v[5], *a;
    memcpy(line, in, len);
    line[len] = '\0';
    if (ftp_split(line, len, v, &a) == 0)
        fail_msg("split(%.*s) accepted", (int)len, in);
}

static void test_split(void **state)
{
    (void)state;
    split_ok("USER alice", "USER", "alice");
    split_ok("retr a file with spaces", "RETR", "a file with spaces");
    split_ok("PWD", "PWD", "");
    split_ok("cwd ", "CWD", "");
    split_ok("STOR  lead", "STOR", " lead"); /* one space separates; the rest is the name */
    split_ok("MKD h\xc3\xa9llo", "MKD", "h\xc3\xa9llo");
    split_bad("", 0);
    split_bad("AB", 2);
    split_bad("RETRIEVE x", 10);
    split_bad("NO\0OP", 5);
    split_bad("CWD\tx", 5);
    split_bad("12 3", 4);
    split_bad(" NOOP", 5);
}

static void test_telnet(void **state)
{
    (void)state;
    char a[] = "\xff\xf4\xff\xf2"
               "ABOR";
    assert_int_equal(ftp_strip_telnet(a, 8), 4);
    assert_memory_equal(a, "ABOR", 4);
    char b[] = "RETR x\xff\xffy"; /* IAC IAC: a literal 0xff */
    size_t n = ftp_strip_telnet(b, 10);
    assert_int_equal(n, 9);
    assert_memory_equal(b, "RETR x\xffy", 9);
    char c[] = "\xff\xfb\x01NOOP"; /* IAC WILL ECHO: three bytes */
    assert_int_equal(ftp_strip_telnet(c, 7), 4);
    assert_memory_equal(c, "NOOP", 4);
    char d[] = "NOOP\xff"; /* a lone IAC at the end */
    assert_int_equal(ftp_strip_telnet(d, 5), 4);
}

static void vpath_is(const char *cwd, const char *arg, const char *want)
{
    char out[FTP_MAX_PATH];
    assert_int_equal(ftp_vpath(cwd, arg, out, sizeof out), 0);
    if (strcmp(out, want) != 0)
        fail_msg("vpath(%s, %s) = %s, want %s", cwd, arg, out, want);
}

static void test_vpath(void **state)
{
    (void)state;
    vpath_is("/", "", "/");
    vpath_is("/", "a", "/a");
    vpath_is("/a/b", "c", "/a/b/c");
    vpath_is("/a/b", "/c", "/c");
    vpath_is("/a/b", "..", "/a");
    vpath_is("/a/b", "../..", "/");
    vpath_is("/a/b", "../../../../etc/passwd", "/etc/passwd"); /* clamped at the root */
    vpath_is("/", "/../../x", "/x");
    vpath_is("/a", ".//./b//c/", "/a/b/c");
    vpath_is("/a", "b/../../..", "/");
    vpath_is("/a", "...", "/a/..."); /* a name, not a step up */
    vpath_is("/a", "..x/y", "/a/..x/y");
    vpath_is("/", "%2e%2e", "/%2e%2e"); /* FTP has no escapes: a name */
    /* A property: whatever the input, the result is absolute, has no "."
     * or ".." segment and no empty one. */
    const char *parts[] = {"..", ".", "a", "", "b", "...", "/"};
    srand(7);
    for (int i = 0; i < 20000; i++) {
        char arg[128] = "", out[FTP_MAX_PATH];
        int k = rand() % 10;
        for (int j = 0; j < k; j++) {
            strcat(arg, parts[rand() % 7]);
            if (rand() % 2)
                strcat(arg, "/");
        }
        assert_int_equal(ftp_vpath(rand() % 2 ? "/" : "/a/b", arg, out, sizeof out), 0);
        assert_true(out[0] == '/');
        assert_null(strstr(out, "//"));
        assert_null(strstr(out, "/../"));
        assert_null(strstr(out, "/./"));
        size_t l = strlen(out);
        assert_false(l >= 3 && strcmp(out + l - 3, "/..") == 0);
        assert_false(l >= 2 && strcmp(out + l - 2, "/.") == 0);
        assert_false(l > 1 && out[l - 1] == '/');
    }
    char small[8];
    assert_int_equal(ftp_vpath("/", "a/verylongname", small, sizeof small), -1);
}

static void test_port(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(ftp_parse_port("127,0,0,1,200,10", &ss, &len), 0);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    assert_int_equal(ntohs(sin->sin_port), 200 * 256 + 10);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
    const char *bad[] = {"",
                         "1,2,3,4,5",
                         "1,2,3,4,5,6,7",
                         "256,0,0,1,1,1",
                         "1,2,3,4,5,256",
                         "a,b,c,d,e,f",
                         "1,,3,4,5,6",
                         "-1,2,3,4,5,6",
                         "1, 2,3,4,5,6"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (ftp_parse_port(bad[i], &ss, &len) == 0)
            fail_msg("PORT %s accepted", bad[i]);

    assert_int_equal(ftp_parse_eprt("|1|132.235.1.2|6275|", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 6275);
    assert_int_equal(ftp_parse_eprt("!2!1080::8:800:200C:417A!5282!", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 5282);
    const char *ebad[] = {"",
                          "|1|1.2.3.4|5",
                          "|3|1.2.3.4|5|",
                          "|1|::1|5|",
                          "|2|1.2.3.4|5|",
                          "|1|1.2.3.4|0|",
                          "|1|1.2.3.4|65536|",
                          "1|1|1.2.3.4|5|",
                          "|1|1.2.3.4|5|x",
                          "|1|999.2.3.4|5|",
                          " |1|1.2.3.4|5|"};
    for (size_t i = 0; i < sizeof ebad / sizeof ebad[0]; i++)
        if (ftp_parse_eprt(ebad[i], &ss, &len) == 0)
            fail_msg("EPRT %s accepted", ebad[i]);
}

static void test_list_line(void **state)
{
    (void)state;
    struct stat st = {0};
    st.st_mode = S_IFREG | 0644;
    st.st_nlink = 1;
    st.st_uid = 1000;
    st.st_gid = 100;
    st.st_size = 12345;
    st.st_mtime = 1764338400; /* 2025-11-28 14:00:00 UTC */
    char out[512];
    size_t n = ftp_list_line(out, sizeof out, "file.txt", &st, NULL, st.st_mtime + 86400);
    assert_string_equal(out, "-rw-r--r--   1 1000     100         12345 Nov 28 14:00 file.txt\r\n");
    assert_int_equal(n, strlen(out));
    /* Older than six months: the year. */
    ftp_list_line(out, sizeof out, "old", &st, NULL, st.st_mtime + 200L * 86400);
    assert_non_null(strstr(out, " Nov 28  2025 old\r\n"));
    st.st_mode = S_IFDIR | 01777;
    ftp_list_line(out, sizeof out, "tmp", &st, NULL, st.st_mtime);
    assert_memory_equal(out, "drwxrwxrwt", 10);
    st.st_mode = S_IFLNK | 0777;
    ftp_list_line(out, sizeof out, "link", &st, "target", st.st_mtime);
    assert_memory_equal(out, "lrwxrwxrwx", 10);
    assert_non_null(strstr(out, " link -> target\r\n"));
    st.st_mode = S_IFREG | 04755;
    ftp_list_line(out, sizeof out, "suid", &st, NULL, st.st_mtime);
    assert_memory_equal(out, "-rwsr-xr-x", 10);
    /* A name too long for the buffer still ends the line. */
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char small[100];
    n = ftp_list_line(small, sizeof small, big, &st, NULL, st.st_mtime);
    assert_int_equal(n, sizeof small - 1);
    assert_memory_equal(small + n - 2, "\r\n", 2);
}

static void test_facts(void **state)
{
    (void)state;
    struct stat st = {0};
    st.st_mode = S_IFREG | 0644;
    st.st_size = 42;
    st.st_mtime = 1764338400;
    st.st_dev = 0x801;
    st.st_ino = 0x1234;
    char out[256];
    ftp_facts(out, sizeof out, &st, USER_READ, FACT_ALL);
    assert_string_equal(out, "type=file;size=42;modify=20251128140000;perm=r;unique=801g1234;");
    ftp_facts(out, sizeof out, &st, USER_READ | USER_WRITE | USER_DELETE | USER_RENAME,
              FACT_TYPE | FACT_PERM);
    assert_string_equal(out, "type=file;perm=rawdf;");
    st.st_mode = S_IFDIR | 0755;
    ftp_facts(out, sizeof out, &st, USER_READ | USER_WRITE | USER_MKDIR | USER_DELETE,
              FACT_TYPE | FACT_PERM);
    assert_string_equal(out, "type=dir;perm=elcmdp;");
    ftp_facts(out, 8, &st, USER_READ, FACT_ALL); /* truncated, still a string */
    assert_true(strlen(out) < 8);
}

static void test_quote(void **state)
{
    (void)state;
    char out[64];
    ftp_quote(out, sizeof out, "/say \"hi\"");
    assert_string_equal(out, "/say \"\"hi\"\"");
}

static void test_users_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/medusa-unit-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/users", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "# comment\n\nalice:$6$salt$hash:home/alice:read,write,delete,mkdir,rename\n"
               "bob:$6$x$y\ncarol:$6$x$y:/srv/carol\ndave:$6$x$y::write\n");
    fclose(f);
    struct cfg_ctx ctx = {.file = "test.conf", .dir = dir, .err = err, .errlen = sizeof err};
    struct users u;
    assert_int_equal(users_load(&ctx, NULL, path, &u), 0);
    assert_int_equal(u.n, 4);
    const struct user *a = users_find(&u, "alice");
    assert_non_null(a);
    assert_int_equal(a->perms, USER_READ | USER_WRITE | USER_DELETE | USER_MKDIR | USER_RENAME);
    char want[300];
    snprintf(want, sizeof want, "%s/home/alice", dir);
    assert_string_equal(a->home, want);
    assert_null(users_find(&u, "bob")->home);
    assert_int_equal(users_find(&u, "bob")->perms, USER_READ);
    assert_string_equal(users_find(&u, "carol")->home, "/srv/carol");
    assert_int_equal(users_find(&u, "dave")->perms, USER_WRITE);
    users_free(&u);
    const char *bad[] = {"nohash\n", ":x\n", "a:$6$x$y:h:read,fly\n", "a:h\na:h\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        assert_non_null(f);
        fputs(bad[i], f);
        fclose(f);
        if (users_load(&ctx, NULL, path, &u) == 0)
            fail_msg("users file %s accepted", bad[i]);
        users_free(&u);
    }
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),     cmocka_unit_test(test_telnet),
        cmocka_unit_test(test_vpath),     cmocka_unit_test(test_port),
        cmocka_unit_test(test_list_line), cmocka_unit_test(test_facts),
        cmocka_unit_test(test_quote),     cmocka_unit_test(test_users_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
