/*
 * The configuration loader, through what `medusad -t` runs (core/main.c):
 * config_load on the file, with every module registered, then
 * config_unref. The input is the file, written beside a few files a
 * configuration may name (a docroot, a users file, secrets, mime types),
 * so that more than the first error is reached. Listen addresses are not
 * bound (-t's check_binds is a bind(2) per address, not parsing).
 * Property: a refusal is "FILE:LINE: message" about this file or a file
 * it names.
 *
 * Loading opens (creates) the access and transfer logs it names, so the
 * process may write only beneath its temporary folder, its working folder
 * and the folders on its command line (libFuzzer's corpus and artifacts):
 * a Landlock ruleset, made once. Where the kernel has no Landlock, an input
 * that names a log and holds a '/' anywhere is skipped instead.
 */
#include "harness.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/landlock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef LANDLOCK_ACCESS_FS_TRUNCATE /* Landlock ABI 3, newer than these headers */
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

static char *path;
static int sandboxed;

/* Writing (creating, removing, truncating) only beneath the given folders. */
static int sandbox(char **dirs, int n)
{
    int abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1)
        return -1;
    struct landlock_ruleset_attr attr = {
        .handled_access_fs = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                             LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                             LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                             LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
                             LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM |
                             (abi >= 2 ? LANDLOCK_ACCESS_FS_REFER : 0) |
                             (abi >= 3 ? LANDLOCK_ACCESS_FS_TRUNCATE : 0)};
    int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (rs < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        struct landlock_path_beneath_attr pb = {.allowed_access = attr.handled_access_fs};
        pb.parent_fd = open(dirs[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (pb.parent_fd < 0)
            continue;
        syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
        close(pb.parent_fd);
    }
    /* /dev/null: the log (opened already) and what libraries open */
    struct landlock_path_beneath_attr dn = {.allowed_access = LANDLOCK_ACCESS_FS_WRITE_FILE};
    if ((dn.parent_fd = open("/dev/null", O_PATH | O_CLOEXEC)) >= 0) {
        syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &dn, 0);
        close(dn.parent_fd);
    }
    int rc = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
                     syscall(SYS_landlock_restrict_self, rs, 0) == 0
                 ? 0
                 : -1;
    close(rs);
    return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fz_init();
    fz_mkdir("www");
    fz_mkdir("ftp");
    fz_mkdir("up");
    fz_write("www/index.html", "hi\n");
    fz_write("users", "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=:/srv:read,write\n");
    fz_mkdir("www/docs");
    fz_mkdir("run");
    fz_write("admin.secret", "a-secret-of-at-least-16-bytes\n");
    chmod(fz_path(0, "admin.secret"), 0600);
    fz_write("operator.secret", "another-secret-of-16-bytes\n");
    chmod(fz_path(0, "operator.secret"), 0600);
    fz_write("mime.types", "text/html html htm\nimage/png png\n");
    path = strdup(fz_path(0, "medusa.conf"));
    /* the folders libFuzzer writes in: its working folder, and every
     * folder named on its command line (corpora, -artifact_prefix=) */
    char *dirs[64], cwd[PATH_MAX];
    int n = 0;
    dirs[n++] = (char *)dir;
    if (getcwd(cwd, sizeof cwd))
        dirs[n++] = cwd;
    else
        dirs[n++] = (char *)dir;
    for (int i = 1; i < *argc && n < 63; i++) {
        char *a = (*argv)[i], *eq = a[0] == '-' ? strchr(a, '=') : NULL;
        char *d = strdup(eq ? eq + 1 : a), *slash;
        struct stat st;
        if (stat(d, &st) < 0 || !S_ISDIR(st.st_mode)) {
            if ((slash = strrchr(d, '/')))
                slash[1] = '\0'; /* a prefix "dir/crash-": its folder */
            else
                strcpy(d, ".");
        }
        dirs[n++] = d;
    }
    sandboxed = sandbox(dirs, n) == 0;
    for (int i = 2; i < n; i++)
        free(dirs[i]);
    if (!sandboxed)
        fprintf(stderr,
                "fuzz_config: no Landlock here: inputs naming a log and a '/' are skipped\n");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!sandboxed && (memmem(data, size, "access_log", 10) || memmem(data, size, "xferlog", 7)) &&
        memchr(data, '/', size))
        return -1; /* not added to the corpus */
    FILE *f = fopen(path, "w");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    char err[CONFIG_ERR_MAX] = "";
    struct config *c = config_load(path, err, sizeof err);
    if (getenv("MEDUSA_FUZZ_SHOW"))
        fprintf(stderr, "%s\n", c ? "configuration ok" : err);
    if (c) {
        config_unref(c);
    } else if (!strchr(err, ':')) {
        fprintf(stderr, "refused without FILE:LINE: '%s'\n", err);
        abort();
    }
    return 0;
}
