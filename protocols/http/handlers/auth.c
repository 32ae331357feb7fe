/*
 * auth handler: HTTP Basic authentication for a path prefix. On success the
 * request goes on down the chain (so auth wraps the handlers after it); on
 * failure the answer is 401 with WWW-Authenticate.
 *
 * The users file (core/users.h) holds crypt(3) hashes (yescrypt, bcrypt,
 * sha512crypt: the format DESIGN.md fixes) or htpasswd's apr1 and {SHA}, so
 * every file htpasswd writes works. Hashing is slow on
 * purpose, and a browser sends the same credentials with every request, so
 * each worker remembers the last few credentials it verified, as SHA-256
 * digests, in the handler's per-worker context (http.h's ctx_init). An unknown user costs the same
 * crypt() as a known one, and the final comparison is constant-time.
 */
#include "core/conn.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "core/throttle.h"
#include "core/users.h"
#include "protocols/http/http.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERIFIED_SLOTS 32

struct auth_worker {
    struct crypt_data cd;
    unsigned char verified[VERIFIED_SLOTS][SHA256_DIGEST_LENGTH];
    unsigned next;
};

struct auth_conf {
    char *realm_header; /* the whole WWW-Authenticate line */
    struct users users;
};

static int check(struct auth_conf *ac, struct auth_worker *aw, const char *user, const char *pass)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char both[1024];
    int bl = snprintf(both, sizeof both, "%s:%s", user, pass);
    SHA256((const unsigned char *)both, (size_t)bl, digest);
    OPENSSL_cleanse(both, sizeof both);
    for (unsigned i = 0; i < VERIFIED_SLOTS; i++)
        if (CRYPTO_memcmp(aw->verified[i], digest, sizeof digest) == 0)
            return 1;
    int ok = users_verify(&ac->users, user, pass, &aw->cd) != NULL;
    if (ok) {
        memcpy(aw->verified[aw->next], digest, sizeof digest);
        aw->next = (aw->next + 1) % VERIFIED_SLOTS;
    }
    return ok;
}

static enum http_action auth_on_req(struct http_handler *h, struct http_req *r)
{
    struct auth_conf *ac = h->conf;
    struct auth_worker *aw = http_handler_ctx(r, h);
    const struct http_str *a = &r->known[HK_AUTHORIZATION];
    const size_t basic = sizeof "Basic " - 1;
    if (a->p && a->len > basic && strncasecmp(a->p, LIT("Basic ")) == 0) {
        const char *b64 = a->p + basic;
        size_t bl = a->len - basic;
        while (bl && *b64 == ' ')
            b64++, bl--;
        if (bl && bl % 4 == 0 && bl <= 1024) {
            char decoded[768 + 4];
            int n = EVP_DecodeBlock((unsigned char *)decoded, (const unsigned char *)b64, (int)bl);
            if (n >= 0) {
                n -= (b64[bl - 1] == '=') + (b64[bl - 2] == '=');
                decoded[n] = '\0';
                char *colon = memchr(decoded, ':', (size_t)n);
                if (colon && strlen(decoded) == (size_t)n) {
                    *colon = '\0';
                    char host[64];
                    conn_peer_host(r->c, host, sizeof host);
                    int blocked;
                    unsigned wait = throttle_check(host, &blocked);
                    if (wait) { /* not checked: too many failures from there */
                        OPENSSL_cleanse(colon + 1, strlen(colon + 1));
                        char retry[48];
                        snprintf(retry, sizeof retry, "Retry-After: %u\r\n", wait);
                        http_error(r, 429, retry);
                        return HTTP_DONE;
                    }
                    int ok = check(ac, aw, decoded, colon + 1);
                    OPENSSL_cleanse(colon + 1, strlen(colon + 1));
                    if (ok) {
                        snprintf(r->user, sizeof r->user, "%.63s", decoded);
                        return HTTP_NEXT;
                    }
                    log_info(r->c->peer, "authentication failed for user '%.64s' on %s", decoded,
                             r->path);
                    throttle_failed(host);
                    /* one guess per connection: requests pipelined behind
                     * it would be checked before the supervisor's wait for
                     * the address reaches this worker */
                    r->close_after = 1;
                }
            }
        }
    }
    http_error(r, 401, ac->realm_header);
    return HTTP_DONE;
}

static int auth_ctx_init(struct http_handler *h, struct worker *w, void **ctx)
{
    (void)w;
    if (!(*ctx = calloc(1, sizeof(struct auth_worker)))) {
        log_error(NULL, "auth %s: out of memory", h->path);
        return -1;
    }
    return 0;
}

static void auth_ctx_dispose(struct http_handler *h, void *ctx)
{
    (void)h;
    OPENSSL_cleanse(ctx, sizeof(struct auth_worker)); /* digests of passwords */
    free(ctx);
}

static void auth_free(struct http_handler *h)
{
    struct auth_conf *ac = h->conf;
    if (!ac)
        return;
    users_free(&ac->users);
    free(ac->realm_header);
    free(ac);
}

static int auth_parse(struct cfg_ctx *ctx, const config_setting_t *block, struct http_handler *h)
{
    struct auth_conf *ac = calloc(1, sizeof *ac);
    if (!ac)
        return cfg_error(ctx, block, "out of memory");
    h->conf = ac;
    const char *realm = "medusa", *users = NULL;
    if (cfg_string(ctx, block, "realm", &realm) < 0 || cfg_string(ctx, block, "users", &users) < 0)
        return -1;
    if (!users)
        return cfg_error(ctx, block, "an auth handler needs 'users', a users file");
    if (strpbrk(realm, "\"\\\r\n"))
        return cfg_error(ctx, block, "'realm' must not contain quotes, backslashes or newlines");
    size_t hl = strlen(realm) + 64;
    if (!(ac->realm_header = malloc(hl)))
        return cfg_error(ctx, block, "out of memory");
    snprintf(ac->realm_header, hl, "WWW-Authenticate: Basic realm=\"%s\", charset=\"UTF-8\"\r\n",
             realm);
    char *path = cfg_path(ctx, users);
    if (!path)
        return cfg_error(ctx, block, "out of memory");
    int rc = users_load(ctx, config_setting_get_member(block, "users"), path, &ac->users);
    free(path);
    return rc;
}

static const char *const auth_keys[] = {"realm", "users", NULL};

const struct http_handler_ops http_auth_ops = {
    .type = "auth",
    .keys = auth_keys,
    .parse = auth_parse,
    .free = auth_free,
    .on_req = auth_on_req,
    .ctx_init = auth_ctx_init,
    .ctx_dispose = auth_ctx_dispose,
};
