/*
 * Path normalisation and confinement, as a property checked against the
 * filesystem. The first byte picks the protocol:
 *   even: HTTP: the rest is a request target's path, normalised by
 *         http_path_normalize (what the router and the static and put
 *         handlers see);
 *   odd:  FTP: the rest is "CWD-ARGUMENT\nARGUMENT": the session's working
 *         folder comes from the first (ftp_vpath from "/", as CWD makes it)
 *         and the path from the second (ftp_vpath from that folder, as
 *         every FTP command resolves its argument).
 * The result must be absolute and lexically clean (no empty, "." or ".."
 * segment), and opening it as both protocols do (fs_open_beneath under the
 * root's descriptor, core/fs.c) must never give a file outside the root: the
 * opened descriptor's real path (/proc/self/fd) is checked, and whenever
 * realpath() of root + result lies outside the root, the open must fail.
 * The root holds symlinks that leave it (absolute, relative, through
 * "..") and some that stay in it, and a loop. Any violation aborts.
 */
#include "harness.h"

#include "core/fs.h"
#include "protocols/ftp/ftp_impl.h"
#include "protocols/http/http_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char root[PATH_MAX], outside[PATH_MAX];
static size_t rootlen;
static int rootfd;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_mkdir("root");
    fz_mkdir("root/a");
    fz_mkdir("root/a/b");
    fz_mkdir("root/d");
    fz_mkdir("outside");
    fz_write("root/file.txt", "in\n");
    fz_write("root/a/b/c.txt", "in\n");
    fz_write("outside/secret", "out\n");
    snprintf(root, sizeof root, "%s", fz_path(0, "root"));
    snprintf(outside, sizeof outside, "%s", fz_path(0, "outside"));
    rootlen = strlen(root);
    fz_symlink("..", "root/a/up");                   /* stays in: root */
    fz_symlink("../../..", "root/a/b/back");         /* leaves by one */
    fz_symlink(outside, "root/abs");                 /* absolute, outside */
    fz_symlink(fz_path(1, "root/a"), "root/abs_in"); /* absolute, inside */
    fz_symlink("../outside/secret", "root/d/leak");  /* relative, outside */
    fz_symlink("../outside", "root/out");            /* a folder outside */
    fz_symlink("a/b", "root/ab");                    /* inside */
    fz_symlink("loop", "root/loop");                 /* ELOOP */
    fz_symlink("/", "root/slash");                   /* the whole filesystem */
    rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        abort();
    return 0;
}

static void violation(const char *what, const char *in, size_t inlen, const char *path,
                      const char *where)
{
    fprintf(stderr, "confinement violated: %s\n  input '%.*s'\n  path '%s'\n  real '%s'\n", what,
            (int)inlen, in, path, where ? where : "");
    abort();
}

/* absolute, and no empty, "." or ".." segment (but HTTP keeps a trailing
 * slash: a folder's URL) */
static void lexical(const char *p, const char *in, size_t inlen, int trailing_slash)
{
    if (p[0] != '/')
        violation("not absolute", in, inlen, p, NULL);
    if (p[1] == '\0')
        return;
    for (const char *s = p + 1;;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if ((n == 0 && !(trailing_slash && !e)) || (n == 1 && s[0] == '.') ||
            (n == 2 && s[0] == '.' && s[1] == '.'))
            violation("unclean segment", in, inlen, p, NULL);
        if (!e)
            break;
        s = e + 1;
    }
}

static int inside(const char *real)
{
    return strncmp(real, root, rootlen) == 0 && (real[rootlen] == '\0' || real[rootlen] == '/');
}

static void confined(const char *p, const char *in, size_t inlen)
{
    int fd = fs_open_beneath(rootfd, p + 1, O_PATH | O_CLOEXEC, 0);
    if (fd >= 0) {
        char proc[64], real[PATH_MAX];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(proc, real, sizeof real - 1);
        close(fd);
        if (n < 0)
            abort();
        real[n] = '\0';
        if (!inside(real))
            violation("opened outside the root", in, inlen, p, real);
    }
    char full[PATH_MAX * 2], real[PATH_MAX];
    snprintf(full, sizeof full, "%s%s", root, p);
    if (realpath(full, real) && !inside(real) && fd >= 0)
        violation("resolves outside the root, and was opened", in, inlen, p, real);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return -1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] % 2 == 0) {
        char *copy = malloc(len ? len : 1), *out = malloc(len + 1);
        memcpy(copy, in, len);
        long n = http_path_normalize(copy, len, out);
        if (n >= 0) {
            if ((size_t)n > len || out[n] != '\0' || memchr(out, '\0', (size_t)n))
                violation("bad length", in, len, out, NULL);
            lexical(out, in, len, 1);
            confined(out, in, len);
        } else if (n != -400 && n != -403 && n != -404) {
            abort();
        }
        free(copy);
        free(out);
        return 0;
    }
    /* FTP: arguments are C strings (the session splits a line at NUL-free
     * bytes); cut at the first NUL as the command line would refuse it */
    char *text = strndup(in, len);
    char *arg = strchr(text, '\n');
    if (arg)
        *arg++ = '\0';
    else
        arg = "";
    char cwd[FTP_MAX_PATH], out[FTP_MAX_PATH];
    if (ftp_vpath("/", text, cwd, sizeof cwd) == 0) {
        lexical(cwd, in, len, 0);
        confined(cwd, in, len);
        if (ftp_vpath(cwd, arg, out, sizeof out) == 0) {
            lexical(out, in, len, 1);
            confined(out, in, len);
        }
    }
    free(text);
    return 0;
}
