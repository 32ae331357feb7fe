/* Users files; see users.h. */
#include "core/users.h"

#include "core/config.h"

#include <crypt.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_perms(char *list, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"read", USER_READ},
                 {"write", USER_WRITE},
                 {"delete", USER_DELETE},
                 {"mkdir", USER_MKDIR},
                 {"rename", USER_RENAME}};
    *out = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        tok += strspn(tok, " ");
        tok[strcspn(tok, " ")] = '\0';
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] && strcmp(names[i].name, tok) != 0)
            i++;
        if (i == sizeof names / sizeof names[0])
            return -1;
        *out |= names[i].bit;
    }
    return 0;
}

static int add_user(struct users *u, const char *name, const char *hash, char *home, unsigned perms)
{
    struct user *v = realloc(u->v, (u->n + 1) * sizeof *v);
    if (!v) {
        free(home);
        return -1;
    }
    u->v = v;
    v[u->n] = (struct user){strdup(name), strdup(hash), home, perms};
    u->n++;
    return v[u->n - 1].name && v[u->n - 1].hash ? 0 : -1;
}

/* A hash of the same kind as the first user's, for unknown names. */
static char *make_dummy(const struct users *u)
{
    if (u->n && (strncmp(u->v[0].hash, "$apr1$", 6) == 0 || strncmp(u->v[0].hash, "{SHA}", 5) == 0))
        return strdup(u->v[0].hash[0] == '{' ? "{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA="
                                             : "$apr1$medusa$AAAAAAAAAAAAAAAAAAAAAA");
    char prefix[8] = "$y$";
    if (u->n && u->v[0].hash[0] == '$') {
        const char *end = strchr(u->v[0].hash + 1, '$');
        if (end && end - u->v[0].hash < (long)sizeof prefix - 1)
            snprintf(prefix, sizeof prefix, "%.*s", (int)(end - u->v[0].hash + 1), u->v[0].hash);
    }
    struct crypt_data *cd = calloc(1, sizeof *cd);
    const char *setting =
        cd ? crypt_gensalt_rn(prefix, 0, NULL, 0, cd->output, sizeof cd->output) : NULL;
    const char *dummy = setting ? crypt_r("medusa-dummy", setting, cd) : NULL;
    char *out = strdup(dummy && dummy[0] != '*' ? dummy : "*");
    free(cd);
    return out;
}

/* ---- the hashes htpasswd writes that libcrypt does not verify ----
 * apr1 (Apache's MD5-crypt variant, htpasswd's default) and {SHA} (base64
 * SHA-1), computed with libcrypto's digests: OpenSSL is already ours, and
 * apr-util would bring a second runtime for two functions. */

static const char itoa64[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static char *to64(char *s, unsigned long v, int n)
{
    while (--n >= 0) {
        *s++ = itoa64[v & 0x3f];
        v >>= 6;
    }
    return s;
}

static int md5(EVP_MD_CTX *c, unsigned char out[16], const void *a, size_t al, const void *b,
               size_t bl, const void *d, size_t dl, const void *e, size_t el)
{
    return EVP_DigestInit_ex(c, EVP_md5(), NULL) && EVP_DigestUpdate(c, a, al) &&
           EVP_DigestUpdate(c, b, bl) && EVP_DigestUpdate(c, d, dl) && EVP_DigestUpdate(c, e, el) &&
           EVP_DigestFinal_ex(c, out, NULL);
}

/* "$apr1$SALT$HASH" for pass with hash's salt, into out (at least 40
 * bytes); 0, or -1. The algorithm is Poul-Henning Kamp's md5crypt with
 * Apache's magic string. */
static int apr1(const char *pass, const char *hash, char *out)
{
    static const char magic[] = "$apr1$";
    const char *salt = hash + sizeof magic - 1;
    size_t sl = strcspn(salt, "$"), pl = strlen(pass);
    if (sl > 8)
        sl = 8;
    unsigned char alt[16], fin[16];
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && md5(c, alt, pass, pl, salt, sl, pass, pl, "", 0) &&
             EVP_DigestInit_ex(c, EVP_md5(), NULL) && EVP_DigestUpdate(c, pass, pl) &&
             EVP_DigestUpdate(c, magic, sizeof magic - 1) && EVP_DigestUpdate(c, salt, sl);
    for (size_t n = pl; ok && n > 0; n -= n > 16 ? 16 : n)
        ok = EVP_DigestUpdate(c, alt, n > 16 ? 16 : n);
    for (size_t i = pl; ok && i; i >>= 1)
        ok = EVP_DigestUpdate(c, i & 1 ? "" : pass, 1);
    ok = ok && EVP_DigestFinal_ex(c, fin, NULL);
    for (int i = 0; ok && i < 1000; i++)
        ok = md5(c, fin, i & 1 ? (const void *)pass : fin, i & 1 ? pl : 16, salt, i % 3 ? sl : 0,
                 pass, i % 7 ? pl : 0, i & 1 ? (const void *)fin : pass, i & 1 ? 16 : pl);
    EVP_MD_CTX_free(c);
    OPENSSL_cleanse(alt, sizeof alt);
    if (!ok)
        return -1;
    char *p = out + sprintf(out, "%s%.*s$", magic, (int)sl, salt);
    p = to64(p, (unsigned long)fin[0] << 16 | fin[6] << 8 | fin[12], 4);
    p = to64(p, (unsigned long)fin[1] << 16 | fin[7] << 8 | fin[13], 4);
    p = to64(p, (unsigned long)fin[2] << 16 | fin[8] << 8 | fin[14], 4);
    p = to64(p, (unsigned long)fin[3] << 16 | fin[9] << 8 | fin[15], 4);
    p = to64(p, (unsigned long)fin[4] << 16 | fin[10] << 8 | fin[5], 4);
    p = to64(p, fin[11], 2);
    *p = '\0';
    OPENSSL_cleanse(fin, sizeof fin);
    return 0;
}

/* "{SHA}" base64(SHA-1(pass)) into out (at least 34 bytes). */
static int sha_b64(const char *pass, char *out)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (!EVP_Digest(pass, strlen(pass), d, &dl, EVP_sha1(), NULL) || dl != 20)
        return -1;
    /* EVP_EncodeBlock writes the rest, and the NUL */
    memcpy(out, "{SHA}", 5); /* NOLINT(bugprone-not-null-terminated-result) */
    EVP_EncodeBlock((unsigned char *)out + 5, d, (int)dl);
    return 0;
}

int users_hash_supported(const char *hash)
{
    size_t n = strlen(hash);
    if (strncmp(hash, "$apr1$", 6) == 0)
        return strchr(hash + 6, '$') != NULL;
    if (strncmp(hash, "{SHA}", 5) == 0)
        return n == 5 + 28;
    if (hash[0] == '$') { /* crypt(3): libcrypt checks the setting without the cost of a hash */
        int c = crypt_checksalt(hash);
        return c == CRYPT_SALT_OK || c == CRYPT_SALT_METHOD_LEGACY || c == CRYPT_SALT_TOO_CHEAP;
    }
    /* traditional DES crypt: 13 characters of its alphabet; anything else
     * (a password written in clear) is refused */
    return n == 13 && strspn(hash, itoa64) == 13;
}

/* What verifying pass against hash computes, in cd->output. */
static const char *compute(const char *pass, const char *hash, struct crypt_data *cd)
{
    if (strncmp(hash, "$apr1$", 6) == 0)
        return apr1(pass, hash, cd->output) == 0 ? cd->output : NULL;
    if (strncmp(hash, "{SHA}", 5) == 0)
        return sha_b64(pass, cd->output) == 0 ? cd->output : NULL;
    return crypt_r(pass, hash, cd);
}

int users_load(struct cfg_ctx *ctx, const void *at, const char *path, struct users *out)
{
    const config_setting_t *where = at;
    *out = (struct users){0};
    FILE *f = fopen(path, "re");
    if (!f)
        return cfg_error(ctx, where, "cannot open users file %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        char *fields[4] = {line, NULL, NULL, NULL};
        for (int i = 1; i < 4; i++) {
            char *colon = strchr(fields[i - 1], ':');
            if (!colon)
                break;
            *colon = '\0';
            fields[i] = colon + 1;
        }
        if (!fields[0][0] || !fields[1] || !fields[1][0]) {
            rc = cfg_error(ctx, where, "%s:%d: expected name:hash[:home[:permissions]]", path,
                           lineno);
            break;
        }
        unsigned perms = USER_READ;
        if (fields[3] && fields[3][0] && parse_perms(fields[3], &perms) < 0) {
            rc = cfg_error(ctx, where,
                           "%s:%d: permissions are a comma list of read, write, delete, mkdir, "
                           "rename",
                           path, lineno);
            break;
        }
        char *home = NULL;
        if (fields[2] && fields[2][0] && !(home = cfg_path(ctx, fields[2]))) {
            rc = cfg_error(ctx, where, "out of memory");
            break;
        }
        if (!users_hash_supported(fields[1])) {
            free(home);
            rc = cfg_error(ctx, where,
                           "%s:%d: user '%s': not a password hash medusa can verify (crypt(3): "
                           "yescrypt, bcrypt, sha512crypt, md5crypt, DES; htpasswd's apr1 and "
                           "{SHA}); passwords in clear are refused",
                           path, lineno, fields[0]);
            break;
        }
        if (users_find(out, fields[0])) {
            free(home);
            rc = cfg_error(ctx, where, "%s:%d: user '%s' appears twice", path, lineno, fields[0]);
            break;
        }
        if (add_user(out, fields[0], fields[1], home, perms) < 0)
            rc = cfg_error(ctx, where, "out of memory");
    }
    if (line)
        OPENSSL_cleanse(line, cap);
    free(line);
    fclose(f);
    if (rc == 0 && !(out->dummy_hash = make_dummy(out)))
        rc = cfg_error(ctx, where, "out of memory");
    if (rc < 0)
        users_free(out); /* nothing half-loaded stays behind */
    return rc;
}

void users_free(struct users *u)
{
    for (size_t i = 0; i < u->n; i++) {
        free(u->v[i].name);
        free(u->v[i].hash);
        free(u->v[i].home);
    }
    free(u->v);
    free(u->dummy_hash);
    *u = (struct users){0};
}

const struct user *users_find(const struct users *u, const char *name)
{
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->v[i].name, name) == 0)
            return &u->v[i];
    return NULL;
}

const struct user *users_verify(const struct users *u, const char *name, const char *pass,
                                struct crypt_data *cd)
{
    const struct user *found = users_find(u, name);
    const char *hash = found ? found->hash : u->dummy_hash ? u->dummy_hash : "*";
    const char *out = compute(pass, hash, cd);
    size_t hl = strlen(hash);
    int ok =
        found && out && out[0] != '*' && strlen(out) == hl && CRYPTO_memcmp(out, hash, hl) == 0;
    return ok ? found : NULL;
}
