/*
 * TLS contexts, ticket keys and counters (core/tls.h says what each is).
 *
 * Defaults follow Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only,
 * ECDHE or DHE key exchange with AEAD ciphers (forward secrecy for every
 * suite), the server's order among them (AES-128-GCM first, ChaCha20 for
 * clients that put it first), no compression, no
 * renegotiation. A `tls` block may narrow the versions and replace the
 * cipher lists.
 */
#include "core/tls.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "core/module.h"
#include "core/sbuf.h"
#include "core/stats.h"

#include <errno.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define CIPHERS_INTERMEDIATE                                                                       \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define SUITES_INTERMEDIATE                                                                        \
    "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
#define GROUPS "X25519:P-256:P-384"
#define KEYS_KEPT 3 /* the sealing key and two before it */

struct tls_sni {
    char **names;
    size_t nnames;
    SSL_CTX *ctx;
};

struct tls_service {
    SSL_CTX *ctx; /* the block's certificate */
    struct tls_sni *sni;
    size_t nsni;
    unsigned handshake_timeout_ms;
    /* what every context of the service is made with */
    int min_version, max_version;
    char *ciphers, *ciphersuites, *alpn, *service;
};

struct tls_key {
    unsigned char name[16], aes[32], hmac[32];
};

struct tls_keys {
    _Atomic int refs;
    int n;
    struct tls_key k[KEYS_KEPT];
};

struct tls_counters {
    _Atomic uint64_t handshakes, resumed, failed, v12, v13;
} __attribute__((aligned(64)));

static struct tls_counters counters[BUS_MAX_WORKERS + 1];
static __thread struct tls_counters *my_counters;
static __thread struct tls_keys *my_keys;
static EVP_CIPHER *ticket_cipher;
static EVP_MAC *ticket_mac;
static int ktls_ok;
static char ktls_why[128] = "not probed";

/* ---- process set-up ---- */

/* TCP_ULP "tls" on an unconnected socket: ENOTCONN means the kernel has
 * the tls module (it checks the state after finding the module), ENOENT
 * that it has none. */
static void ktls_probe(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(ktls_why, sizeof ktls_why, "no: cannot probe (%s)", strerror(errno));
        return;
    }
    if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3) == 0 || errno == ENOTCONN) {
        ktls_ok = 1;
        snprintf(ktls_why, sizeof ktls_why, "yes");
    } else {
        snprintf(ktls_why, sizeof ktls_why, "no: the kernel has no TLS offload (TCP_ULP tls: %s)",
                 strerror(errno));
    }
    close(fd);
#ifdef OPENSSL_NO_KTLS
    ktls_ok = 0;
    snprintf(ktls_why, sizeof ktls_why, "no: OpenSSL is built without kTLS");
#endif
}

int tls_global_init(void)
{
    if (!OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) ||
        !(ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) ||
        !(ticket_mac = EVP_MAC_fetch(NULL, "HMAC", NULL))) {
        log_error(NULL, "OpenSSL cannot start: %s", tls_error_text("unknown error"));
        return -1;
    }
    ktls_probe();
    return 0;
}

const char *tls_ktls_status(void)
{
    return ktls_why;
}

int tls_ktls_available(void)
{
    return ktls_ok;
}

const char *tls_error_text(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : fallback;
}

/* ---- counters ---- */

void tls_thread_init(int slot)
{
    my_counters = &counters[slot];
}

void tls_count_done(SSL *ssl)
{
    if (!my_counters)
        return;
    stat_add(&my_counters->handshakes, 1);
    if (SSL_session_reused(ssl))
        stat_add(&my_counters->resumed, 1);
    if (SSL_version(ssl) == TLS1_3_VERSION)
        stat_add(&my_counters->v13, 1);
    else
        stat_add(&my_counters->v12, 1);
}

void tls_count_failed(SSL *ssl, const char *peer, const char *why)
{
    (void)ssl;
    if (my_counters)
        stat_add(&my_counters->failed, 1);
    log_info(peer, "TLS handshake failed: %s", why);
}

void tls_stats(enum module_stats_format fmt, struct sbuf *sb)
{
    uint64_t v[5] = {0};
    for (int i = 0; i <= BUS_MAX_WORKERS; i++) {
        v[0] += stat_get(&counters[i].handshakes);
        v[1] += stat_get(&counters[i].resumed);
        v[2] += stat_get(&counters[i].failed);
        v[3] += stat_get(&counters[i].v12);
        v[4] += stat_get(&counters[i].v13);
    }
    if (fmt == MODULE_STATS_PROM) {
        static const char *const names[] = {"handshakes", "resumed", "handshake_failures"};
        static const char *const help[] = {"TLS handshakes completed",
                                           "TLS handshakes that resumed a session (ticket)",
                                           "TLS handshakes that failed or timed out"};
        for (int i = 0; i < 3; i++)
            sb_addf(sb,
                    "# HELP medusa_tls_%s_total %s.\n# TYPE medusa_tls_%s_total counter\n"
                    "medusa_tls_%s_total %llu\n",
                    names[i], help[i], names[i], names[i], (unsigned long long)v[i]);
        sb_addf(sb,
                "# HELP medusa_tls_protocol_handshakes_total TLS handshakes by protocol version.\n"
                "# TYPE medusa_tls_protocol_handshakes_total counter\n"
                "medusa_tls_protocol_handshakes_total{version=\"TLSv1.2\"} %llu\n"
                "medusa_tls_protocol_handshakes_total{version=\"TLSv1.3\"} %llu\n",
                (unsigned long long)v[3], (unsigned long long)v[4]);
        return;
    }
    if (fmt == MODULE_STATS_JSON) {
        sb_addf(sb,
                "{\"handshakes\":%llu,\"resumed\":%llu,\"handshake_failures\":%llu,"
                "\"tlsv1.2\":%llu,\"tlsv1.3\":%llu,\"ktls\":\"",
                (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[2],
                (unsigned long long)v[3], (unsigned long long)v[4]);
        sb_add_json(sb, ktls_why);
        sb_adds(sb, "\"}");
        return;
    }
    sb_addf(sb,
            "tls: handshakes %llu, resumed %llu, handshake_failures %llu, TLSv1.2 %llu, TLSv1.3 "
            "%llu; kernel TLS %s\n",
            (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[2],
            (unsigned long long)v[3], (unsigned long long)v[4], ktls_why);
}

/* ---- ticket keys ---- */

static struct tls_keys *current; /* supervisor */
static struct event *rotate_ev;
static unsigned rotate_every_s;

void tls_keys_unref(void *p)
{
    struct tls_keys *k = p;
    if (k && atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1) {
        OPENSSL_cleanse(k, sizeof *k);
        free(k);
    }
}

static struct tls_keys *keys_ref(struct tls_keys *k)
{
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    return k;
}

/* A new set: a fresh sealing key, then the newest of the old ones. */
static struct tls_keys *keys_next(const struct tls_keys *old)
{
    struct tls_keys *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    atomic_init(&k->refs, 1);
    if (RAND_bytes((unsigned char *)&k->k[0], sizeof k->k[0]) != 1) {
        free(k);
        return NULL;
    }
    k->n = 1;
    for (int i = 0; old && i < old->n && k->n < KEYS_KEPT; i++)
        k->k[k->n++] = old->k[i];
    return k;
}

struct tls_keys *tls_keys_current(void)
{
    return current ? keys_ref(current) : NULL;
}

void tls_thread_keys(struct tls_keys *keys)
{
    tls_keys_unref(my_keys);
    my_keys = keys;
}

static void rotate(void)
{
    struct tls_keys *k = keys_next(current);
    if (!k) {
        log_error(NULL, "cannot make a new TLS ticket key; keeping the current one");
        return;
    }
    tls_keys_unref(current);
    current = k;
    tls_thread_keys(keys_ref(k)); /* the supervisor's own (the console) */
    for (int id = 1; id <= bus_max_worker(); id++) {
        if (!bus_is_live(id))
            continue;
        struct msg m = {.type = MSG_TLS_KEYS, .ptr = keys_ref(k), .free_fn = tls_keys_unref};
        bus_send(id, &m);
    }
}

static void arm(void)
{
    struct timeval tv = {(time_t)rotate_every_s, 0};
    event_add(rotate_ev, &tv);
}

static void rotate_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    rotate();
    log_debug(NULL, "TLS ticket keys rotated");
    arm();
}

int tls_keys_start(struct event_base *base, unsigned rotate_s)
{
    if (!(current = keys_next(NULL)) || !(rotate_ev = evtimer_new(base, rotate_cb, NULL))) {
        log_error(NULL, "cannot make the TLS ticket keys");
        return -1;
    }
    tls_thread_keys(keys_ref(current));
    rotate_every_s = rotate_s;
    arm();
    return 0;
}

void tls_keys_set_rotation(unsigned rotate_s)
{
    if (!rotate_ev || rotate_s == rotate_every_s)
        return;
    rotate_every_s = rotate_s;
    arm(); /* from now */
}

void tls_keys_stop(void)
{
    if (rotate_ev)
        event_free(rotate_ev);
    rotate_ev = NULL;
    tls_thread_keys(NULL);
    tls_keys_unref(current);
    current = NULL;
}

/* RFC 5077 tickets: AES-256-CBC and HMAC-SHA256 under the thread's keys.
 * 1: sealed or opened with the newest key; 2: opened with an older one
 * (the client gets a fresh ticket); 0: no ticket (sealing) or a full
 * handshake (opening). */
static int ticket_cb(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    (void)s;
    const struct tls_keys *ks = my_keys;
    if (!ks || !ks->n)
        return 0;
    const struct tls_key *key = NULL;
    int rc = 1;
    if (enc) {
        key = &ks->k[0];
        memcpy(name, key->name, 16);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher)) != 1)
            return -1;
    } else {
        for (int i = 0; i < ks->n && !key; i++)
            if (memcmp(name, ks->k[i].name, 16) == 0) {
                key = &ks->k[i];
                rc = i == 0 ? 1 : 2;
            }
        if (!key)
            return 0;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key->hmac, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end()};
    if (!EVP_MAC_CTX_set_params(hctx, params) ||
        !EVP_CipherInit_ex(cctx, ticket_cipher, NULL, key->aes, iv, enc))
        return -1;
    return rc;
}

/* Every session carries a random id of the full handshake it began with,
 * in its tickets' application data, kept through resumptions and renewed
 * tickets: so FTP can tell that a data connection resumed *its* control
 * connection's session, not any session of the service (tls_same_origin). */
static int ticket_gen_cb(SSL *s, void *arg)
{
    (void)arg;
    SSL_SESSION *ss = SSL_get0_session(s);
    void *d;
    size_t l;
    if (!ss)
        return 0;
    if (SSL_SESSION_get0_ticket_appdata(ss, &d, &l) == 1 && l == 16)
        return 1;
    unsigned char id[16];
    return RAND_bytes(id, sizeof id) == 1 &&
           SSL_SESSION_set1_ticket_appdata(ss, id, sizeof id) == 1;
}

/* What OpenSSL does without a callback. */
static SSL_TICKET_RETURN ticket_dec_cb(SSL *s, SSL_SESSION *ss, const unsigned char *name,
                                       size_t len, SSL_TICKET_STATUS status, void *arg)
{
    (void)s, (void)ss, (void)name, (void)len, (void)arg;
    switch (status) {
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    case SSL_TICKET_SUCCESS:
        return SSL_TICKET_RETURN_USE;
    case SSL_TICKET_SUCCESS_RENEW:
        return SSL_TICKET_RETURN_USE_RENEW;
    default:
        return SSL_TICKET_RETURN_ABORT;
    }
}

int tls_same_origin(SSL *a, SSL *b)
{
    SSL_SESSION *sa = SSL_get0_session(a), *sb = SSL_get0_session(b);
    void *da, *db;
    size_t la, lb;
    return sa && sb && SSL_SESSION_get0_ticket_appdata(sa, &da, &la) == 1 &&
           SSL_SESSION_get0_ticket_appdata(sb, &db, &lb) == 1 && la == 16 && lb == 16 &&
           memcmp(da, db, 16) == 0;
}

/* ---- contexts ---- */

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    (void)s;
    const unsigned char *ours = arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, (unsigned)strlen((const char *)ours), in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int name_match(const char *pattern, const char *name)
{
    if (strcmp(pattern, "*") == 0)
        return 1;
    if (pattern[0] == '*' && pattern[1] == '.') {           /* one label, as RFC 6125 says */
        size_t pl = strlen(pattern) - 1, nl = strlen(name); /* ".example.com" */
        return nl > pl && strcasecmp(name + nl - pl, pattern + 1) == 0 &&
               !memchr(name, '.', nl - pl);
    }
    return strcasecmp(pattern, name) == 0;
}

/* SNI: an exact name first, then a wildcard, in the order of the file. */
static int sni_cb(SSL *s, int *alert, void *arg)
{
    (void)alert;
    const struct tls_service *ts = arg;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (!name || !ts->nsni)
        return SSL_TLSEXT_ERR_OK;
    SSL_CTX *pick = NULL;
    for (int pass = 0; pass < 2 && !pick; pass++)
        for (size_t i = 0; i < ts->nsni && !pick; i++)
            for (size_t j = 0; j < ts->sni[i].nnames && !pick; j++) {
                const char *p = ts->sni[i].names[j];
                if ((p[0] == '*') == pass && name_match(p, name))
                    pick = ts->sni[i].ctx;
            }
    if (pick)
        SSL_set_SSL_CTX(s, pick);
    return SSL_TLSEXT_ERR_OK;
}

/* A key file is refused unless only its owner can read it, as the
 * console's secret files are. */
static int check_key_mode(struct cfg_ctx *ctx, const config_setting_t *at, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return cfg_error(ctx, at, "key file %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return cfg_error(ctx, at, "key file %s is not a regular file", path);
    if (st.st_mode & 077)
        return cfg_error(ctx, at,
                         "key file %s is readable by group or others (mode %03o): chmod 600 it",
                         path, (unsigned)(st.st_mode & 0777));
    return 0;
}

static int pem_error(struct cfg_ctx *ctx, const config_setting_t *at, const char *what,
                     const char *path)
{
    return cfg_error(ctx, at, "%s %s: %s", what, path, tls_error_text("cannot be loaded"));
}

static EVP_PKEY *ffdhe2048(void)
{
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    EVP_PKEY *p = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "ffdhe2048", 0),
        OSSL_PARAM_construct_end()};
    if (pctx && EVP_PKEY_paramgen_init(pctx) > 0 && EVP_PKEY_CTX_set_params(pctx, params) > 0)
        EVP_PKEY_paramgen(pctx, &p);
    EVP_PKEY_CTX_free(pctx);
    return p;
}

/* A context for one certificate and key, with the service's settings. */
static SSL_CTX *make_ctx(struct cfg_ctx *ctx, const config_setting_t *block,
                         const struct tls_service *ts)
{
    const char *cert = NULL, *key = NULL;
    if (cfg_string(ctx, block, "certificate", &cert) < 0 || cfg_string(ctx, block, "key", &key) < 0)
        return NULL;
    if (!cert || !key) {
        cfg_error(ctx, block, "a 'tls' block needs 'certificate' and 'key'");
        return NULL;
    }
    const config_setting_t *cat = config_setting_get_member(block, "certificate"),
                           *kat = config_setting_get_member(block, "key");
    char *cpath = cfg_path(ctx, cert), *kpath = cfg_path(ctx, key);
    SSL_CTX *c = NULL;
    ERR_clear_error();
    if (!cpath || !kpath) {
        cfg_error(ctx, block, "out of memory");
        goto out;
    }
    if (check_key_mode(ctx, kat, kpath) < 0)
        goto out;
    if (!(c = SSL_CTX_new(TLS_server_method()))) {
        cfg_error(ctx, block, "cannot make a TLS context: %s", tls_error_text("out of memory"));
        goto out;
    }
    if (SSL_CTX_use_certificate_chain_file(c, cpath) != 1) {
        pem_error(ctx, cat, "certificate", cpath);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(c, kpath, SSL_FILETYPE_PEM) != 1) {
        pem_error(ctx, kat, "key", kpath);
        goto fail;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
        cfg_error(ctx, kat, "key %s does not belong to certificate %s", kpath, cpath);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(c, ts->min_version);
    SSL_CTX_set_max_proto_version(c, ts->max_version);
    /* The server's order (AES-128-GCM first: as safe, and faster than
     * AES-256 with AES-NI), except that a client that puts ChaCha20 first
     * (no AES in hardware) gets it. */
    SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_PRIORITIZE_CHACHA |
                               (tls_ktls_available() ? SSL_OP_ENABLE_KTLS : 0));
    /* idle connections give their record buffers back; writes may be
     * partial and their buffer may move between retries (HTTP rebuilds
     * it from the response) */
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_cipher_list(c, ts->ciphers) != 1) {
        cfg_error(ctx, config_setting_get_member(block, "ciphers") ?: block, "ciphers '%s': %s",
                  ts->ciphers, tls_error_text("no usable cipher"));
        goto fail;
    }
    if (SSL_CTX_set_ciphersuites(c, ts->ciphersuites) != 1) {
        cfg_error(ctx, config_setting_get_member(block, "ciphersuites") ?: block,
                  "ciphersuites '%s': %s", ts->ciphersuites, tls_error_text("no usable suite"));
        goto fail;
    }
    SSL_CTX_set1_groups_list(c, GROUPS);
    /* DHE (TLS 1.2 with an RSA key) in RFC 7919's ffdhe2048 group, as
     * Mozilla's profile has it; OpenSSL's own choice if that fails */
    EVP_PKEY *dh = ffdhe2048();
    if (!dh || SSL_CTX_set0_tmp_dh_pkey(c, dh) != 1) {
        EVP_PKEY_free(dh);
        SSL_CTX_set_dh_auto(c, 1);
    }
    /* sessions live in tickets only (any worker opens them) */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(c, ticket_cb);
    SSL_CTX_set_session_ticket_cb(c, ticket_gen_cb, ticket_dec_cb, NULL);
    SSL_CTX_set_timeout(c, 7200); /* a client's hint; a key opens tickets for 2-3 rotations */
    /* a ticket opens only under the service and certificate it was made for */
    unsigned char sid[32];
    char idtext[PATH_MAX + 256];
    int n = snprintf(idtext, sizeof idtext, "%s\n%s", ts->service, cpath);
    SHA256((unsigned char *)idtext, (size_t)n, sid);
    SSL_CTX_set_session_id_context(c, sid, sizeof sid);
    if (ts->alpn)
        SSL_CTX_set_alpn_select_cb(c, alpn_cb, ts->alpn);
    goto out;
fail:
    SSL_CTX_free(c);
    c = NULL;
out:
    free(cpath);
    free(kpath);
    return c;
}

static int parse_version(struct cfg_ctx *ctx, const config_setting_t *e, int *v)
{
    const char *s = config_setting_get_string(e);
    if (s && (strcmp(s, "TLSv1.2") == 0 || strcmp(s, "TLSv1.3") == 0)) {
        *v = s[6] == '2' ? TLS1_2_VERSION : TLS1_3_VERSION;
        return 0;
    }
    return cfg_error(ctx, e,
                     "'protocols' entries are \"TLSv1.2\" or \"TLSv1.3\" (older ones are "
                     "not offered)");
}

static const char *const tls_keys[] = {
    "certificate", "key", "protocols", "ciphers", "ciphersuites", "handshake_timeout", NULL};

int cfg_tls(struct cfg_ctx *ctx, const config_setting_t *block, const char *service,
            const char *alpn, struct tls_service **out)
{
    if (!config_setting_is_group(block))
        return cfg_error(ctx, block,
                         "'tls' must be a group: tls = { certificate = ...; key = ...; }");
    if (cfg_check_keys(ctx, block, "'tls'", tls_keys, NULL) < 0)
        return -1;
    struct tls_service *ts = calloc(1, sizeof *ts);
    if (!ts)
        return cfg_error(ctx, block, "out of memory");
    *out = ts;
    ts->handshake_timeout_ms = 10000;
    ts->min_version = TLS1_2_VERSION;
    ts->max_version = TLS1_3_VERSION;
    const char *ciphers = CIPHERS_INTERMEDIATE, *suites = SUITES_INTERMEDIATE;
    if (cfg_string(ctx, block, "ciphers", &ciphers) < 0 ||
        cfg_string(ctx, block, "ciphersuites", &suites) < 0 ||
        cfg_duration_ms(ctx, block, "handshake_timeout", 600, &ts->handshake_timeout_ms) < 0)
        return -1;
    const config_setting_t *p = config_setting_get_member(block, "protocols");
    if (p) {
        if (!config_setting_is_array(p) || config_setting_length(p) == 0)
            return cfg_error(ctx, p, "'protocols' is a list: [ \"TLSv1.2\", \"TLSv1.3\" ]");
        ts->min_version = TLS1_3_VERSION;
        ts->max_version = TLS1_2_VERSION;
        for (int i = 0; i < config_setting_length(p); i++) {
            int v;
            if (parse_version(ctx, config_setting_get_elem(p, (unsigned)i), &v) < 0)
                return -1;
            /* parse_version sets v whenever it returns 0 (its error is cfg_error's -1) */
            /* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult) */
            ts->min_version = v < ts->min_version ? v : ts->min_version;
            ts->max_version = v > ts->max_version ? v : ts->max_version;
        }
    }
    if (ts->handshake_timeout_ms == 0)
        return cfg_error(ctx, config_setting_get_member(block, "handshake_timeout"),
                         "'handshake_timeout' must be more than 0");
    if (!(ts->ciphers = strdup(ciphers)) || !(ts->ciphersuites = strdup(suites)) ||
        !(ts->service = strdup(service)) || (alpn && !(ts->alpn = strdup(alpn))))
        return cfg_error(ctx, block, "out of memory");
    if (!(ts->ctx = make_ctx(ctx, block, ts)))
        return -1;
    SSL_CTX_set_tlsext_servername_callback(ts->ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ts->ctx, ts);
    return 0;
}

int cfg_tls_sni(struct cfg_ctx *ctx, struct tls_service *ts, const config_setting_t *block,
                const char *const *names, size_t nnames)
{
    static const char *const keys[] = {"certificate", "key", NULL};
    if (!config_setting_is_group(block))
        return cfg_error(ctx, block,
                         "'tls' must be a group: tls = { certificate = ...; key = ...; }");
    if (cfg_check_keys(ctx, block, "a virtual host's 'tls' (its certificate and key only)", keys,
                       NULL) < 0)
        return -1;
    struct tls_sni *grown = realloc(ts->sni, (ts->nsni + 1) * sizeof *grown);
    if (!grown)
        return cfg_error(ctx, block, "out of memory");
    ts->sni = grown;
    struct tls_sni *e = &ts->sni[ts->nsni];
    *e = (struct tls_sni){0};
    if (!(e->names = calloc(nnames ? nnames : 1, sizeof *e->names)))
        return cfg_error(ctx, block, "out of memory");
    ts->nsni++;
    for (size_t i = 0; i < nnames; i++) {
        if (!(e->names[i] = strdup(names[i])))
            return cfg_error(ctx, block, "out of memory");
        e->nnames++;
    }
    return (e->ctx = make_ctx(ctx, block, ts)) ? 0 : -1;
}

void tls_service_free(struct tls_service *ts)
{
    if (!ts)
        return;
    SSL_CTX_free(ts->ctx);
    for (size_t i = 0; i < ts->nsni; i++) {
        for (size_t j = 0; j < ts->sni[i].nnames; j++)
            free(ts->sni[i].names[j]);
        free(ts->sni[i].names);
        SSL_CTX_free(ts->sni[i].ctx);
    }
    free(ts->sni);
    free(ts->ciphers);
    free(ts->ciphersuites);
    free(ts->alpn);
    free(ts->service);
    free(ts);
}

unsigned tls_handshake_timeout_ms(const struct tls_service *ts)
{
    return ts->handshake_timeout_ms;
}

/* ---- connections ---- */

SSL *tls_new(const struct tls_service *ts, int fd, const char *peer)
{
    SSL *ssl = SSL_new(ts->ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        log_error(peer, "cannot start TLS: %s", tls_error_text("out of memory"));
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

struct bufferevent *tls_bufferevent(struct event_base *base, int fd, SSL *ssl)
{
    SSL_clear_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE);
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

int tls_handshake(SSL *ssl, const char *peer, short *want)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1) {
        tls_count_done(ssl);
        return 1;
    }
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        return 0;
    }
    char why[160];
    if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
        snprintf(why, sizeof why, "%s", errno && r < 0 ? strerror(errno) : "the client closed");
    else
        snprintf(why, sizeof why, "%s", tls_error_text("protocol error"));
    tls_count_failed(ssl, peer, why);
    return -1;
}

static ssize_t io_result(SSL *ssl, int r, short *want, int reading)
{
    int e = SSL_get_error(ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = EV_READ;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        *want = EV_WRITE;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
        if (reading)
            return 0;
        errno = EPIPE;
        return -1;
    case SSL_ERROR_SYSCALL:
        if (!errno || errno == EAGAIN) /* (not a retry: OpenSSL said so) */
            errno = EPIPE;
        return -1;
    default:
        log_debug(NULL, "TLS %s: %s", reading ? "read" : "write", tls_error_text("error"));
        errno = EPROTO;
        return -1;
    }
}

ssize_t tls_read(SSL *ssl, void *buf, size_t len, short *want)
{
    ERR_clear_error();
    int r = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return r > 0 ? r : io_result(ssl, r, want, 1);
}

ssize_t tls_write(SSL *ssl, const void *buf, size_t len, short *want)
{
    ERR_clear_error();
    int r = SSL_write(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return r > 0 ? r : io_result(ssl, r, want, 0);
}
