/* core/config: a valid file, and each kind of error with its file:line. */
#include "core/config.h"

#include "admin/admin.h"
#include "core/module.h"
#include "protocols/chat/chat.h"
#include "protocols/http/http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

static char dir[] = "/tmp/medusa-test-config-XXXXXX";

static void mkdir_in(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    mkdir(path, 0755);
}

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Expects failure with exactly "PATH:LINE: " followed by text containing
 * fragment. */
static void expect_error(const char *text, int line, const char *fragment)
{
    const char *path = write_file("bad.conf", text);
    char err[CONFIG_ERR_MAX] = "";
    struct config *c = config_load(path, err, sizeof err);
    if (c)
        fail_msg("accepted:\n%s", text);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, fragment))
        fail_msg("expected '%s...%s', got '%s'", prefix, fragment, err);
}

static void valid_file(void **state)
{
    (void)state;
    const char *path =
        write_file("good.conf", "workers = 3;\n"
                                "grace_period = 2.5;\n"
                                "worker_connections = 100;\n"
                                "log = { level = \"debug\"; error_log = \"e.log\"; };\n"
                                "chat = ( { name = \"c\";\n"
                                "  listen = [ \"127.0.0.1:7000\", \"[::1]:7000\",\n"
                                "             \"unix:run/c.sock\" ];\n"
                                "  max_line = 100; idle_timeout = 0; } );\n");
    char err[CONFIG_ERR_MAX];
    struct config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    /* fail_msg does not return (cmocka longjmps), which its header does not say */
    /* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->grace_ms, 2500);
    assert_int_equal(c->worker_connections, 100);
    assert_int_equal(c->nservices, 1);
    const struct service *s = config_service(c, "c");
    assert_non_null(s);
    assert_ptr_equal(s->module, &chat_module);
    assert_int_equal(s->nlisten, 3);
    char want[300];
    snprintf(want, sizeof want, "unix:%s/run/c.sock", dir);
    assert_string_equal(s->listen[2].text, want);
    snprintf(want, sizeof want, "%s/e.log", dir);
    assert_string_equal(c->error_log, want);
    const struct chat_cfg *cc = s->pcfg;
    assert_int_equal(cc->max_line, 100);
    assert_int_equal(cc->idle_ms, 0);
    /* References: the snapshot outlives its loader while referenced. */
    config_ref(c);
    config_unref(c);
    assert_string_equal(config_service(c, "c")->name, "c");
    config_unref(c);
}

static void auto_workers(void **state)
{
    (void)state;
    const char *path = write_file("auto.conf", "workers = \"auto\";\n");
    char err[CONFIG_ERR_MAX];
    struct config *c = config_load(path, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->workers, (int)sysconf(_SC_NPROCESSORS_ONLN));
    config_unref(c);
}

static void errors_name_file_and_line(void **state)
{
    (void)state;
    expect_error("workers = 2;\n\nbogus = 1;\n", 3, "unknown key 'bogus'");
    expect_error("workers = \"many\";\n", 1, "\"auto\" or an integer");
    expect_error("\nworkers = 0;\n", 2, "between 1 and");
    expect_error("workers = 2;\nlog = { level = ; };\n", 2, "syntax error");
    expect_error("log = { level = \"loud\"; };\n", 1, "'level' must be one of");
    expect_error("log = {\n  colour = true;\n};\n", 2, "unknown key 'colour'");
    expect_error("grace_period = \"soon\";\n", 1, "number of seconds");
    expect_error("worker_connections = 1.5;\n", 1, "must be an integer");
    expect_error("chat = { name = \"c\"; };\n", 1, "must be a list");
    expect_error("chat = (\n { listen = \"127.0.0.1:7000\"; }\n);\n", 2,
                 "needs a non-empty 'name'");
    expect_error("chat = (\n { name = \"c\"; }\n);\n", 2, "needs 'listen'");
    expect_error("chat = ( { name = \"c\";\n listen = [ \"127.0.0.1:7000\",\n"
                 "  \"127.0.0.1:99999\" ]; } );\n",
                 3, "bad port");
    expect_error("chat = ( { name = \"c\"; listen = \"nowhere\"; } );\n", 1, "expected HOST:PORT");
    expect_error("chat = ( { name = \"c\"; listen = \"127.0.0.1:7000\";\n"
                 "  max_line = \"long\"; } );\n",
                 2, "'max_line' must be an integer");
    expect_error("chat = ( { name = \"c\"; listen = \"127.0.0.1:7000\";\n"
                 "  max_line = 1; } );\n",
                 2, "between 16 and");
    expect_error("chat = ( { name = \"c\"; listen = \"127.0.0.1:7000\";\n"
                 "  colour = 1; } );\n",
                 2, "unknown key 'colour'");
    expect_error("chat = (\n"
                 " { name = \"a\"; listen = \"127.0.0.1:7000\"; },\n"
                 " { name = \"b\";\n"
                 "   listen = [ \"127.0.0.1:7001\", \"127.0.0.1:7000\" ]; }\n"
                 ");\n",
                 4, "duplicate listener 127.0.0.1:7000");
    expect_error("chat = ( { name = \"a\";\n"
                 " listen = [ \"127.0.0.1:7000\", \"127.0.0.1:7000\" ]; } );\n",
                 2, "duplicate listener");
    expect_error("chat = (\n"
                 " { name = \"a\"; listen = \"127.0.0.1:7000\"; },\n"
                 " { name = \"a\"; listen = \"127.0.0.1:7001\"; }\n"
                 ");\n",
                 3, "duplicate service name 'a'");
}

#define HTTP_PRE "http = ( { name = \"w\"; listen = \"127.0.0.1:7000\";\n"

static void http_errors(void **state)
{
    (void)state;
    mkdir_in("www");
    expect_error(HTTP_PRE "} );\n", 1, "needs 'vhosts'");
    expect_error(HTTP_PRE "max_uri = 10;\n vhosts = ( { handlers = ( { type = \"static\"; "
                          "root = \"www\"; } ); } ); } );\n",
                 2, "between 64 and");
    expect_error(HTTP_PRE "vhosts = ( { names = [ \"*\" ];\n handlers = (\n"
                          " { type = \"magic\"; } ); } ); } );\n",
                 4, "unknown handler type 'magic'");
    expect_error(HTTP_PRE "vhosts = ( { handlers = (\n { type = \"static\"; } ); } ); } );\n", 3,
                 "needs 'root'");
    expect_error(HTTP_PRE
                 "vhosts = ( { handlers = ( { type = \"static\";\n root = \"nowhere\"; } ); "
                 "} ); } );\n",
                 3, "nowhere");
    expect_error(HTTP_PRE "vhosts = ( { handlers = ( { type = \"static\"; root = \"www\";\n"
                          " colour = 1; } ); } ); } );\n",
                 3, "unknown key 'colour' in a handler");
    expect_error(HTTP_PRE "vhosts = ( { handlers = ( { type = \"static\"; root = \"www\";\n"
                          " methods = [ \"FETCH\" ]; } ); } ); } );\n",
                 3, "unknown HTTP method 'FETCH'");
    expect_error(HTTP_PRE "vhosts = ( { names = [\n \"a*b\" ]; handlers = ( { type = \"static\"; "
                          "root = \"www\"; } ); } ); } );\n",
                 2, "bad host name 'a*b'");
    expect_error(HTTP_PRE "vhosts = ( { handlers = ( { type = \"redirect\";\n path = \"/a\"; to = "
                          "\"/b\"; status = 303; } ); } ); } );\n",
                 3, "301, 302, 307 or 308");
    expect_error(HTTP_PRE "vhosts = ( { handlers = ( { type = \"redirect\"; to = \"/b\";\n"
                          " pattern = \"([\"; } ); } ); } );\n",
                 3, "bad pattern");
    expect_error(HTTP_PRE "vhosts = ( { handlers = ( { type = \"auth\";\n users = \"nofile\"; } ); "
                          "} ); } );\n",
                 3, "cannot open users file");
    expect_error(HTTP_PRE "vhosts = ( { handlers = ( { type = \"static\";\n path = \"x\"; "
                          "root = \"www\"; } ); } ); } );\n",
                 2, "must start with '/'");
    expect_error(HTTP_PRE "vhosts = ( { names = [ \"*\" ]; handlers = ( { type = \"static\"; root "
                          "= \"www\"; } ); },\n { names = [ \"*\" ]; handlers = ( { type = "
                          "\"static\"; root = \"www\"; } ); } ); } );\n",
                 3, "more than one virtual host");
}

static void missing_file(void **state)
{
    (void)state;
    char err[CONFIG_ERR_MAX];
    char path[300];
    snprintf(path, sizeof path, "%s/absent.conf", dir);
    assert_null(config_load(path, err, sizeof err));
    assert_non_null(strstr(err, ":0: cannot read"));
}

static int setup(void **state)
{
    (void)state;
    static const struct module *const modules[] = {&http_module, &chat_module, &admin_module, NULL};
    modules_register(modules);
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_file),
        cmocka_unit_test(auto_workers),
        cmocka_unit_test(errors_name_file_and_line),
        cmocka_unit_test(http_errors),
        cmocka_unit_test(missing_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
