/* Confined opening of files; see fs.h. */
#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic int openat2_works = 1;

int fs_open_beneath(int rootfd, const char *rel, int flags, int allow_outside)
{
    if (!*rel)
        rel = ".";
    if (allow_outside)
        return openat(rootfd, rel, flags);
    if (openat2_works) {
        struct open_how how = {.flags = (uint64_t)flags,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        int fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
        if (fd >= 0 || errno != ENOSYS)
            return fd;
        openat2_works = 0; /* benign race: every thread learns the same */
    }
    /* No openat2: open, then check where the file really is. */
    int fd = openat(rootfd, rel, flags);
    if (fd < 0)
        return -1;
    char proc[64], root[PATH_MAX], real[PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", rootfd);
    ssize_t rl = readlink(proc, root, sizeof root - 1);
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t fl = readlink(proc, real, sizeof real - 1);
    if (rl < 0 || fl < 0 || fl < rl || memcmp(root, real, (size_t)rl) != 0 ||
        (fl > rl && real[rl] != '/' && !(rl == 1 && root[0] == '/'))) {
        close(fd);
        errno = EXDEV;
        return -1;
    }
    return fd;
}
