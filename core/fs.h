/*
 * Confined file access shared by the protocols that serve a folder (HTTP's
 * static and put handlers, FTP): a path is opened relative to a root
 * folder's descriptor and may never resolve outside it. Any thread.
 */
#pragma once

/* Opens rel (no leading slash; "" is the root itself) under the folder
 * rootfd with flags, refusing (EXDEV or ELOOP) any resolution, symlinks
 * included, that leaves it: openat2(RESOLVE_BENEATH), or on kernels
 * without it a check of where the opened file really is. allow_outside
 * makes the root only lexical. */
int fs_open_beneath(int rootfd, const char *rel, int flags, int allow_outside);
