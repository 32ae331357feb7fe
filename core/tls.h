/*
 * TLS: the server contexts a configuration makes, the session-ticket keys
 * every thread shares, and TLS on a connection.
 *
 * Contexts. A service's `tls` block becomes a struct tls_service in its
 * snapshot: one SSL_CTX for the block's certificate, and one more for each
 * virtual host that brings its own (SNI picks it by name). A context is
 * made and checked while the snapshot is built (file:line errors) and never
 * changed afterwards; OpenSSL lets any number of threads make connections
 * from one context. A reload builds new contexts: new handshakes use them,
 * connections accepted earlier keep theirs with their snapshot.
 *
 * Tickets. No thread keeps a session cache of its own: a session is a
 * ticket the client holds, sealed with keys the supervisor makes and
 * rotates (tls_ticket_rotate seconds) and sends to every worker through
 * the bus (MSG_TLS_KEYS), so a ticket from one worker resumes on any
 * other. Each thread that makes handshakes holds its current key set
 * (tls_thread_keys): the newest key seals, the two before it still open.
 *
 * Counters (handshakes, resumptions, failures, versions) have one slot per
 * thread, written by that thread only.
 */
#pragma once

#include <libconfig.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>

struct bufferevent;
struct cfg_ctx;
struct conn;
struct event_base;
struct sbuf;
enum module_stats_format;

struct tls_service;
struct tls_keys;

/* ---- any thread, once ---- */

/* Library set-up and the kernel-TLS probe; main() calls it before any
 * configuration is read. 0, or -1 (logged). */
int tls_global_init(void);
/* Whether the kernel offers TLS offload (kTLS), in words, for logs and
 * stats: "yes", or why not. */
const char *tls_ktls_status(void);
int tls_ktls_available(void);

/* ---- configuration (the thread building a snapshot) ---- */

/* A service's `tls` block. alpn: the module's protocols in ALPN wire form
 * (NULL: none). */
int cfg_tls(struct cfg_ctx *ctx, const config_setting_t *block, const char *service,
            const char *alpn, struct tls_service **out);
/* A virtual host's own `tls` block: its certificate answers SNI for names
 * ("example.com", "*.example.com"; "*" matches any name). */
int cfg_tls_sni(struct cfg_ctx *ctx, struct tls_service *ts, const config_setting_t *block,
                const char *const *names, size_t nnames);
void tls_service_free(struct tls_service *ts);
unsigned tls_handshake_timeout_ms(const struct tls_service *ts);

/* ---- ticket keys ---- */

/* Supervisor: makes the first key set and rotates it every rotate_s
 * seconds on base, sending each new set to the live workers. */
int tls_keys_start(struct event_base *base, unsigned rotate_s);
void tls_keys_set_rotation(unsigned rotate_s);
void tls_keys_stop(void);
/* Supervisor: a reference to the current set, for a worker being made. */
struct tls_keys *tls_keys_current(void);
void tls_keys_unref(void *p);
/* The calling thread's counters slot (bus id) and its key set; takes the
 * reference (the previous one is dropped). */
void tls_thread_init(int slot);
void tls_thread_keys(struct tls_keys *keys);

/* ---- connections ---- */

/* A server-side SSL for fd from the service's default context, with the
 * accept state set; NULL (logged) on failure. */
SSL *tls_new(const struct tls_service *ts, int fd, const char *peer);
/* A TLS bufferevent for a server-side ssl on fd, accepting: it owns both
 * (BEV_OPT_CLOSE_ON_FREE), EOF without close_notify is an end, not an
 * error, and writes are never partial (libevent moves on to its next chunk
 * after a partial SSL_write). NULL (ssl freed, fd open) on failure. */
struct bufferevent *tls_bufferevent(struct event_base *base, int fd, SSL *ssl);
/* A handshake step. 1: done (counted); 0: call again when *want
 * (EV_READ or EV_WRITE) is ready; -1: failed (counted, logged at info with
 * the peer). */
int tls_handshake(SSL *ssl, const char *peer, short *want);
/* Whether two connections' sessions began with the same full handshake
 * (one resumed the other's, through any number of tickets). */
int tls_same_origin(SSL *a, SSL *b);
/* For handshakes driven elsewhere (bufferevents): count and log the end. */
void tls_count_done(SSL *ssl);
void tls_count_failed(SSL *ssl, const char *peer, const char *why);
/* OpenSSL's reason for the last error on this thread, or fallback. */
const char *tls_error_text(const char *fallback);

/* Reads and writes with the contract of read(2)/send(2): n > 0; 0 at the
 * end of the stream (read); -1 with errno EAGAIN (then *want says which
 * event to wait for) or another errno (EPROTO: a TLS error, logged). */
ssize_t tls_read(SSL *ssl, void *buf, size_t len, short *want);
ssize_t tls_write(SSL *ssl, const void *buf, size_t len, short *want);

/* ---- figures (any thread) ---- */

void tls_stats(enum module_stats_format fmt, struct sbuf *sb);
