/*
 * A users file (DESIGN.md): one account per line,
 * name:hash[:home[:permissions]], '#' comments. The hash is any crypt(3)
 * hash libcrypt verifies, or what htpasswd writes besides: apr1 MD5 and
 * {SHA}. A password in clear is refused when the file is loaded. HTTP Basic auth reads name and
 * hash; FTP also reads home (relative to the configuration folder unless absolute) and the
 * permissions, a comma list from read,write,delete,mkdir,rename (default read).
 *
 * A loaded file is part of a configuration snapshot: immutable, read by
 * any thread. users_verify takes the caller's crypt_data (per worker:
 * it is large and crypt_r writes into it).
 */
#pragma once

#include <stddef.h>

struct cfg_ctx;
struct crypt_data;

enum user_perm {
    USER_READ = 1u << 0,
    USER_WRITE = 1u << 1,
    USER_DELETE = 1u << 2,
    USER_MKDIR = 1u << 3,
    USER_RENAME = 1u << 4,
};

struct user {
    char *name;
    char *hash;
    char *home; /* absolute, or NULL when the line has none */
    unsigned perms;
};

struct users {
    struct user *v;
    size_t n;
    char *dummy_hash; /* an unknown name costs the same crypt() as a known one */
};

/* Loads path (already resolved); errors name the file and line and are
 * reported at the configuration setting `at`. Returns 0, or -1 with *out
 * empty (users_free on it is harmless). */
int users_load(struct cfg_ctx *ctx, const void *at, const char *path, struct users *out);
void users_free(struct users *u);
/* 1 if hash is a kind users_verify can check. */
int users_hash_supported(const char *hash);
const struct user *users_find(const struct users *u, const char *name);
/* The account if pass is its password, else NULL. Constant time in the
 * comparison; the same crypt() cost for unknown names. */
const struct user *users_verify(const struct users *u, const char *name, const char *pass,
                                struct crypt_data *cd);
