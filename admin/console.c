/*
 * The admin console; see console.h. This file has the listeners,
 * sessions, authentication and the questions to workers; the commands
 * themselves are in commands.c.
 *
 * Sessions are bufferevents on the supervisor's loop. A line is read,
 * split into words and looked up in the console's command table and then
 * in every module's commands (core/module.h), each of which says the level
 * it needs (operator: every read-only command; admin: everything).
 * A reply is always one "STATUS LENGTH\n" frame. Bad input (an over-long
 * line, control bytes, an unknown command, wrong arguments) gets a 400 and
 * the session goes on; an over-long line is skipped to its end.
 *
 * Authentication (TCP). The challenge is 32 random bytes in hex; the
 * answer is compared, in constant time, with the HMAC of each configured
 * secret. A wrong answer is counted and logged, and answered after a
 * delay, then the session is closed; a new session gets a new challenge,
 * so a replayed answer fails.
 */
#include "admin/admin.h"
#include "admin/console_impl.h"
#include "core/bus.h"
#include "core/config.h"
#include "core/iplimit.h"
#include "core/listener.h"
#include "core/throttle.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "core/supervisor.h"
#include "core/tls.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 8192
#define MAX_WORDS 16
#define FAIL_DELAY_MS 1000
#define AUTHENTICATING_MAX 256 /* TCP sessions authenticating at once */
#define AUTH_S 10              /* seconds a TCP session has to authenticate */
#define IDLE_S 600             /* seconds an idle session is kept */
#define ACCEPT_RESUME_MS 100   /* out of descriptors: accepting pauses this long */

const char *const admin_level_names[] = {"none", "operator", "admin"};

#define OOM "out of memory\n"

/* ---- replies ---- */

void admin_reply(struct admin_session *s, int status, const char *body, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out, "%d %zu\n", status, len);
    evbuffer_add(out, body, len);
}

void admin_replyf(struct admin_session *s, int status, const char *fmt, ...)
{
    struct sbuf sb = {0};
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        admin_reply(s, 500, LIT(OOM));
        return;
    }
    sb_add(&sb, text, (size_t)n);
    free(text);
    admin_reply(s, status, sb.p ? sb.p : "", sb.len);
    sb_free(&sb);
}

static void session_free(struct admin_session *s)
{
    struct admin *a = s->a;
    list_remove(&s->node);
    a->nsessions--;
    iplimit_release(s->ip_slot);
    if (s->is_tcp && s->level == MODULE_ANYONE)
        a->nauthenticating--;
    if (s->query) {
        event_free(s->query->timeout);
        sb_free(&s->query->sb);
        free(s->query);
    }
    if (s->delay_ev)
        event_free(s->delay_ev);
    if (s->auth_ev)
        event_free(s->auth_ev);
    bufferevent_free(s->bev);
    if (s->cfg)
        config_unref(s->cfg);
    free(s);
}

void admin_close_after_write(struct admin_session *s)
{
    s->closing = 1;
    bufferevent_disable(s->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
        session_free(s);
}

void admin_send_sb(struct admin_session *s, int status, struct sbuf *sb)
{
    if (sb->failed)
        admin_reply(s, 500, LIT(OOM));
    else
        admin_reply(s, status, sb->p ? sb->p : "", sb->len);
    sb_free(sb);
}

/* ---- questions to workers ---- */

static void read_cb(struct bufferevent *bev, void *arg);

static void query_finish(struct admin_query *q)
{
    struct admin_session *s = q->s;
    s->query = NULL;
    event_free(q->timeout);
    int missing = q->expected - q->got;
    struct sbuf out = {0};
    int status = admin_query_format(q, &out);
    if (missing > 0) {
        status = 500;
        sb_addf(&out, "(%d worker%s did not answer within %d ms)\n", missing,
                missing == 1 ? "" : "s", ADMIN_QUERY_MS);
    }
    sb_free(&q->sb);
    free(q);
    admin_send_sb(s, status, &out);
    bufferevent_enable(s->bev, EV_READ);
    read_cb(s->bev, s); /* lines that arrived meanwhile */
}

static void query_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    query_finish(arg);
}

void admin_console_message(void *state, struct msg *m)
{
    struct admin *a = state;
    struct list *pos;
    if (m->type != ADMIN_REPLY) {
        log_error(NULL, "admin: unexpected message %u from thread %u", m->type, m->from);
        msg_release(m);
        return;
    }
    list_for_each(pos, &a->sessions)
    {
        struct admin_session *s = list_entry(pos, struct admin_session, node);
        struct admin_query *q = s->query;
        if (!q || q->id != m->a)
            continue;
        if (m->ptr)
            sb_adds(&q->sb, m->ptr);
        q->sum += m->b;
        if (++q->got == q->expected)
            query_finish(q);
        break;
    }
    msg_release(m);
}

/* Asks workers (one, or all with worker 0); the reply goes out when they
 * have answered. */
void admin_ask(struct admin_session *s, int kind, int worker, uint64_t arg, const char *text,
               const char *what, int json)
{
    struct admin *a = s->a;
    struct admin_query *q = calloc(1, sizeof *q);
    if (!q || !(q->timeout = evtimer_new(a->base, query_timeout, q))) {
        free(q);
        admin_reply(s, 500, LIT(OOM));
        return;
    }
    q->id = ++a->next_query;
    q->kind = kind;
    q->json = json;
    q->s = s;
    snprintf(q->what, sizeof q->what, "%s", what ? what : "");
    s->query = q;
    bufferevent_disable(s->bev, EV_READ);
    struct sup_worker_view v[SUP_MAX_VIEWS];
    int n = sup_workers(a->sup, v, SUP_MAX_VIEWS);
    for (int i = 0; i < n; i++) {
        if (strcmp(v[i].state, "stopped") == 0 || (worker && v[i].id != worker))
            continue;
        char *copy = text ? strdup(text) : NULL;
        if (text && !copy)
            continue; /* counted as silent: the reply says so */
        struct msg m = {.module = (uint16_t)module_id(&admin_module),
                        .type = (uint16_t)kind,
                        .a = q->id,
                        .b = arg,
                        .ptr = copy,
                        .free_fn = copy ? free : NULL};
        bus_send(v[i].id, &m);
        q->expected++;
    }
    if (q->expected == 0) {
        query_finish(q);
        return;
    }
    struct timeval tv = {ADMIN_QUERY_MS / 1000, (ADMIN_QUERY_MS % 1000) * 1000};
    evtimer_add(q->timeout, &tv);
}

int admin_worker_exists(struct admin_session *s, int id)
{
    struct sup_worker_view v[SUP_MAX_VIEWS];
    int n = sup_workers(s->a->sup, v, SUP_MAX_VIEWS);
    for (int i = 0; i < n; i++)
        if (v[i].id == id && strcmp(v[i].state, "stopped") != 0)
            return 1;
    return 0;
}

/* ---- authentication ---- */

static int hmac_matches(const char *secret, const char *challenge, const char *answer)
{
    if (!secret)
        return 0;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)challenge,
         strlen(challenge), mac, &maclen);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned i = 0; i < maclen; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    size_t hl = 2 * (size_t)maclen;
    return strlen(answer) == hl && CRYPTO_memcmp(hex, answer, hl) == 0;
}

static void fail_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct admin_session *s = arg;
    admin_replyf(s, 401, "authentication failed\n");
    admin_close_after_write(s);
}

static void authenticate(struct admin_session *s, int argc, char **argv)
{
    struct admin *a = s->a;
    char host[64];
    iplimit_host(s->peer, host, sizeof host);
    int blocked;
    unsigned wait = throttle_check(host, &blocked);
    if (wait) { /* not checked: too many failures from there */
        admin_replyf(s, 401, "too many failed logins from your address: try again in %u s\n", wait);
        admin_close_after_write(s);
        return;
    }
    if (argc == 2 && hmac_matches(a->secret, s->challenge, argv[1]))
        s->level = MODULE_ADMIN;
    else if (argc == 2 && hmac_matches(a->operator_secret, s->challenge, argv[1]))
        s->level = MODULE_OPERATOR;
    if (s->level) {
        memset(s->challenge, 0, sizeof s->challenge); /* one use only */
        a->nauthenticating--;
        if (s->auth_ev)
            event_del(s->auth_ev);
        if (a->nsessions - a->nauthenticating > a->max_sessions) {
            log_warn(s->peer, "admin session refused: %u sessions already", a->max_sessions);
            admin_replyf(s, 500, "too many admin sessions (at most %u)\n", a->max_sessions);
            admin_close_after_write(s);
            return;
        }
        struct timeval idle = {IDLE_S, 0};
        bufferevent_set_timeouts(s->bev, &idle, &idle);
        log_info(s->peer, "admin session authenticated (%s)", admin_level_names[s->level]);
        admin_replyf(s, 200, "authenticated as %s\n", admin_level_names[s->level]);
        return;
    }
    a->auth_failures++;
    log_warn(s->peer, "admin authentication failed (%lu failures since start)", a->auth_failures);
    throttle_failed(host);
    /* Answer late and close: a guesser gets one try per connection and
     * second; the challenge dies with the session. */
    bufferevent_disable(s->bev, EV_READ);
    s->delay_ev = evtimer_new(a->base, fail_cb, s);
    struct timeval tv = {FAIL_DELAY_MS / 1000, (FAIL_DELAY_MS % 1000) * 1000};
    if (!s->delay_ev || evtimer_add(s->delay_ev, &tv) < 0)
        fail_cb(-1, 0, s);
}

/* ---- commands ---- */

/* How many words of argv a command's name spells out: all of its words,
 * or 0 when they differ. */
static int name_matches(const char *name, int argc, char **argv)
{
    int k = 0;
    for (const char *p = name; *p;) {
        size_t n = strcspn(p, " ");
        if (k >= argc || strlen(argv[k]) != n || strncmp(argv[k], p, n) != 0)
            return 0;
        k++;
        p += n + strspn(p + n, " ");
    }
    return k;
}

static int first_word_is(const char *name, const char *word)
{
    size_t n = strlen(word);
    return strncmp(name, word, n) == 0 && (name[n] == ' ' || name[n] == '\0');
}

static int allowed(struct admin_session *s, const char *name, enum module_level need)
{
    if (s->level >= need)
        return 1;
    log_warn(s->peer, "admin command '%s' refused: needs level %s", name, admin_level_names[need]);
    admin_replyf(s, 401, "'%s' needs level %s; this session is %s\n", name, admin_level_names[need],
                 admin_level_names[s->level]);
    return 0;
}

/* The console's own commands first, then the modules', the longest name
 * that matches; words that begin a module's family of commands but match
 * none of them get the family's usages. */
static void run_command(struct admin_session *s, int argc, char **argv)
{
    for (const struct admin_command *c = admin_commands; c->name; c++) {
        if (strcmp(c->name, argv[0]) != 0)
            continue;
        if (!allowed(s, argv[0], c->level))
            return;
        log_info(s->peer, "admin command: %s%s%s", argv[0], argc > 1 ? " " : "",
                 argc > 1 ? argv[1] : "");
        c->fn(s, argc, argv);
        return;
    }
    const struct module *best_m = NULL;
    const struct module_command *best = NULL;
    int best_words = 0, family = 0;
    for (unsigned i = 1; i <= module_count(); i++) {
        const struct module *m = module_at(i);
        for (const struct module_command *c = m->commands; c && c->name; c++) {
            int k = name_matches(c->name, argc, argv);
            if (k > best_words) {
                best_words = k;
                best = c;
                best_m = m;
            }
            family |= first_word_is(c->name, argv[0]);
        }
    }
    if (best) {
        if (!allowed(s, best->name, best->level))
            return;
        if (best->level >= MODULE_ADMIN)
            log_warn(s->peer, "admin command: %s", best->name);
        else
            log_info(s->peer, "admin command: %s", best->name);
        struct sbuf sb = {0};
        int status = best->run(sup_module_state(s->a->sup, best_m), argc, argv, &sb);
        admin_send_sb(s, status, &sb);
        return;
    }
    if (family) {
        struct sbuf sb = {0};
        sb_adds(&sb, "usage:");
        for (unsigned i = 1; i <= module_count(); i++)
            for (const struct module_command *c = module_at(i)->commands; c && c->name; c++)
                if (first_word_is(c->name, argv[0]))
                    sb_addf(&sb, "%s %s", sb.len > 6 ? " |" : "", c->usage);
        sb_adds(&sb, "\n");
        admin_send_sb(s, 400, &sb);
        return;
    }
    admin_replyf(s, 400, "unknown command '%.64s'; try 'help'\n", argv[0]);
}

void admin_help(struct admin_session *s)
{
    struct sbuf sb = {0};
    /* The usage column is as wide as the widest usage, every module's too. */
    int w = 0;
    for (const struct admin_command *c = admin_commands; c->name; c++)
        w = (int)strlen(c->usage) > w ? (int)strlen(c->usage) : w;
    for (unsigned i = 1; i <= module_count(); i++)
        for (const struct module_command *c = module_at(i)->commands; c && c->name; c++)
            w = (int)strlen(c->usage) > w ? (int)strlen(c->usage) : w;
    sb_adds(&sb, "commands (level; listing commands take a trailing 'json'):\n");
    for (const struct admin_command *c = admin_commands; c->name; c++)
        sb_addf(&sb, "  %-*s  %-8s %s\n", w, c->usage, admin_level_names[c->level], c->help);
    for (unsigned i = 1; i <= module_count(); i++)
        for (const struct module_command *c = module_at(i)->commands; c && c->name; c++)
            sb_addf(&sb, "  %-*s  %-8s %s\n", w, c->usage, admin_level_names[c->level], c->help);
    admin_send_sb(s, 200, &sb);
}

/* ---- sessions ---- */

static void run_line(struct admin_session *s, char *line)
{
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            admin_replyf(s, 400, "control characters are not allowed in commands\n");
            return;
        }
    char *argv[MAX_WORDS + 1], *save;
    int argc = 0;
    for (char *w = strtok_r(line, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (argc == MAX_WORDS) {
            admin_replyf(s, 400, "too many words (at most %d)\n", MAX_WORDS);
            return;
        }
        argv[argc++] = w;
    }
    argv[argc] = NULL;
    if (argc == 0)
        return; /* an empty line: nothing to answer */
    if (s->level == MODULE_ANYONE) {
        if (strcmp(argv[0], "auth") == 0) {
            authenticate(s, argc, argv);
            return;
        }
        if (strcmp(argv[0], "quit") != 0) {
            log_warn(s->peer, "admin command before authentication: refused");
            admin_replyf(s, 401, "authenticate first: auth HEX(HMAC-SHA256(secret, challenge))\n");
            admin_close_after_write(s);
            return;
        }
    }
    run_command(s, argc, argv);
}

static int has_control(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
            return 1;
    return 0;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct admin_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    /* One command at a time: lines already read wait while the workers
     * answer one (query_finish comes back here). */
    while (!s->closing && !s->delay_ev && !s->query) {
        size_t len;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (!line) {
            if (evbuffer_get_length(in) > MAX_LINE) {
                /* Drop what we have and the rest of the line when it comes. */
                evbuffer_drain(in, evbuffer_get_length(in));
                if (!s->skipping)
                    admin_replyf(s, 400, "line too long (at most %d bytes)\n", MAX_LINE);
                s->skipping = 1;
            }
            return;
        }
        if (s->skipping) { /* the end of an over-long line */
            s->skipping = 0;
            free(line);
            continue;
        }
        if (len && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len > MAX_LINE) {
            admin_replyf(s, 400, "line too long (at most %d bytes)\n", MAX_LINE);
        } else if (has_control(line, len)) { /* a bare CR, a NUL, an escape... */
            admin_replyf(s, 400, "control characters are not allowed in commands\n");
        } else {
            run_line(s, line);
        }
        free(line);
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct admin_session *s = arg;
    if (s->closing)
        session_free(s);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct admin_session *s = arg;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (what & BEV_EVENT_CONNECTED) {
        s->tls_handshaking = 0;
        tls_count_done(ssl);
        config_unref(s->cfg);
        s->cfg = NULL;
        return;
    }
    if (s->tls_handshaking) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        const char *why = e ? ERR_reason_error_string(e) : NULL;
        tls_count_failed(ssl, s->peer,
                         why                          ? why
                         : (what & BEV_EVENT_TIMEOUT) ? "timed out"
                                                      : "the client closed");
        session_free(s);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        log_debug(s->peer, "admin session closed");
        session_free(s);
    }
}

static int peer_allowed(int fd, char *why, size_t whylen)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        snprintf(why, whylen, "SO_PEERCRED: %s", strerror(errno));
        return 0;
    }
    if (cred.uid == 0 || cred.uid == geteuid())
        return 1;
    snprintf(why, whylen, "uid %u is neither root nor the service user", (unsigned)cred.uid);
    return 0;
}

/* A TCP session has AUTH_S seconds from connecting to authenticate,
 * however it spends them (the bufferevent's timeouts only see silence: a
 * client trickling bytes would keep its slot for ever). */
static void auth_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct admin_session *s = arg;
    if (s->closing || s->delay_ev)
        return;               /* already on its way out */
    if (s->tls_handshaking) { /* nothing can be written to it */
        tls_count_failed(bufferevent_openssl_get_ssl(s->bev), s->peer, "timed out");
        session_free(s);
        return;
    }
    log_info(s->peer, "admin session closed: not authenticated within %d s", AUTH_S);
    admin_replyf(s, 401, "not authenticated within %d s\n", AUTH_S);
    admin_close_after_write(s);
}

/* Too many sessions are authenticating: the oldest one still waiting to
 * (not one whose failure is being answered) makes room, so that clients
 * that connect and say nothing, or trickle, cannot lock the operator out:
 * a flood must open AUTHENTICATING_MAX connections while one client
 * authenticates to close it. Returns 0 when none can go. */
static int evict_unauthenticated(struct admin *a, const struct admin_session *newcomer)
{
    for (struct list *pos = list_last(&a->sessions); pos && pos != &a->sessions; pos = pos->prev) {
        struct admin_session *s = list_entry(pos, struct admin_session, node);
        if (s == newcomer || !s->is_tcp || s->level != MODULE_ANYONE || s->closing || s->delay_ev)
            continue;
        log_warn(s->peer, "admin session closed: %u others are authenticating, it is the oldest",
                 AUTHENTICATING_MAX);
        session_free(s);
        return 1;
    }
    return 0;
}

static void resume_accept_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct admin_listener *l = arg;
    event_add(l->ev, NULL);
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct admin_listener *l = arg;
    struct admin *a = l->a;
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The socket stays readable: stop watching it for a while
                 * rather than spin (the clients wait in its queue). */
                struct timeval tv = {0, ACCEPT_RESUME_MS * 1000};
                log_warn(l->addr.text, "admin accept: %s; pausing accepts for %d ms",
                         strerror(errno), ACCEPT_RESUME_MS);
                event_del(l->ev);
                evtimer_add(l->resume_ev, &tv);
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                log_error(l->addr.text, "admin accept: %s", strerror(errno));
            }
            return;
        }
        char peer[LISTEN_TEXT_MAX];
        if (l->is_unix)
            snprintf(peer, sizeof peer, "%s", l->addr.text);
        else
            sockaddr_text((struct sockaddr *)&ss, sl, peer, sizeof peer);
        char why[128];
        if (l->is_unix && !peer_allowed(fd, why, sizeof why)) {
            log_warn(peer, "admin session refused: %s", why);
            close(fd);
            continue;
        }
        struct admin_session *s = calloc(1, sizeof *s);
        SSL *ssl = NULL;
        if (l->addr.tls && (!a->tls || !(ssl = tls_new(a->tls, fd, peer)))) {
            if (!a->tls)
                log_error(peer, "admin session refused: the configuration has no 'tls' now");
            free(s);
            close(fd);
            continue;
        }
        /* The challenge goes out once the handshake is done: a TLS
         * bufferevent holds what is written until then. */
        struct bufferevent *bev = !s ? NULL
                                  : ssl
                                      ? tls_bufferevent(a->base, fd, ssl)
                                      : bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (!bev) {
            if (!s) /* (else the SSL went with the failed bufferevent) */
                SSL_free(ssl);
            free(s);
            close(fd);
            log_error(peer, "out of memory for an admin session");
            continue;
        }
        if (ssl) {
            s->tls_handshaking = 1;
            /* until its handshake ends, the session holds the snapshot its
             * certificate (and SNI's callback argument) belong to */
            s->cfg = config_ref((struct config *)sup_config(a->sup));
        }
        s->a = a;
        s->bev = bev;
        s->is_tcp = !l->is_unix;
        s->ip_slot = -1;
        snprintf(s->peer, sizeof s->peer, "%s", peer);
        list_insert_head(&a->sessions, &s->node);
        a->nsessions++;
        if (s->is_tcp)
            a->nauthenticating++;
        bufferevent_setcb(bev, read_cb, write_cb, event_cb, s);
        /* An idle console session does not hold a slot for ever, and one
         * that has not authenticated holds it only briefly. */
        struct timeval idle = {l->is_unix ? IDLE_S : AUTH_S, 0};
        bufferevent_set_timeouts(bev, &idle, &idle);
        /* Its address's cap first, before another session makes room. */
        if (s->is_tcp && a->max_conns_per_ip) {
            char host[64];
            iplimit_host(peer, host, sizeof host);
            if ((s->ip_slot = iplimit_acquire(IPLIMIT_CONSOLE, "", host, a->max_conns_per_ip)) <
                0) {
                log_warn(peer, "admin session refused: %u sessions from this address already",
                         a->max_conns_per_ip);
                admin_replyf(s, 500, "too many admin sessions from your address (at most %u)\n",
                             a->max_conns_per_ip);
                admin_close_after_write(s);
                continue;
            }
        }
        /* max_sessions counts authenticated sessions (and Unix ones); those
         * authenticating have a pool of their own, checked again when they
         * authenticate. */
        if (a->nsessions - a->nauthenticating > a->max_sessions ||
            (a->nauthenticating > AUTHENTICATING_MAX && !evict_unauthenticated(a, s))) {
            log_warn(peer, "admin session refused: %u sessions already", a->max_sessions);
            admin_replyf(s, 500, "too many admin sessions (at most %u)\n", a->max_sessions);
            admin_close_after_write(s);
            continue;
        }
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        if (s->is_tcp) {
            unsigned char rnd[32];
            if (RAND_bytes(rnd, sizeof rnd) != 1) {
                admin_replyf(s, 500, "no randomness for a challenge\n");
                admin_close_after_write(s);
                continue;
            }
            for (size_t k = 0; k < sizeof rnd; k++)
                snprintf(s->challenge + 2 * k, 3, "%02x", rnd[k]);
            struct timeval deadline = {AUTH_S, 0};
            if (!(s->auth_ev = evtimer_new(a->base, auth_timeout_cb, s)) ||
                evtimer_add(s->auth_ev, &deadline) < 0) {
                admin_replyf(s, 500, "out of memory\n");
                admin_close_after_write(s);
                continue;
            }
            admin_reply(s, 401, s->challenge, strlen(s->challenge));
        } else {
            s->level = MODULE_ADMIN;
        }
        log_info(peer, "admin session opened%s%s", ssl ? " in TLS" : "",
                 s->is_tcp ? " (authenticating)" : " (admin)");
    }
}

static void forget_secrets(struct admin *a)
{
    if (a->secret)
        OPENSSL_cleanse(a->secret, strlen(a->secret));
    if (a->operator_secret)
        OPENSSL_cleanse(a->operator_secret, strlen(a->operator_secret));
    free(a->secret);
    free(a->operator_secret);
    a->secret = a->operator_secret = NULL;
}

/* 0, or -1 without memory (then no secret is known: TCP logins fail). */
static int set_secrets(struct admin *a, const struct admin_config *ac)
{
    forget_secrets(a);
    a->max_sessions = ac->max_sessions;
    a->max_conns_per_ip = ac->max_conns_per_ip;
    if ((ac->secret && !(a->secret = strdup(ac->secret))) ||
        (ac->operator_secret && !(a->operator_secret = strdup(ac->operator_secret)))) {
        forget_secrets(a);
        return -1;
    }
    return 0;
}

static int is_loopback(const struct listen_addr *a)
{
    if (a->family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
    if (a->family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
    return 1;
}

int admin_console_start(struct supervisor *sup, const struct config *cfg, void **state, char *err,
                        size_t errlen)
{
    const struct admin_config *ac = config_section(cfg, &admin_module);
    struct admin *a = calloc(1, sizeof *a);
    if (!a || !ac) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->base = sup_base(sup);
    a->sup = sup;
    list_init(&a->sessions);
    a->tls = ac->tls;
    if (set_secrets(a, ac) < 0) {
        snprintf(err, errlen, "out of memory");
        admin_console_stop(a);
        return -1;
    }
    for (size_t i = 0; i < ac->nlisten; i++) {
        const struct listen_addr *addr = &ac->listen[i];
        struct admin_listener *l = calloc(1, sizeof *l);
        if (!l) {
            snprintf(err, errlen, "out of memory");
            admin_console_stop(a);
            return -1;
        }
        l->a = a;
        l->addr = *addr;
        l->is_unix = addr->family == AF_UNIX;
        if (l->is_unix) {
            /* The runtime folder may not exist yet (a fresh checkout, a
             * cleaned /run): make it, private. */
            char dir[sizeof((struct sockaddr_un *)0)->sun_path];
            snprintf(dir, sizeof dir, "%s", ((const struct sockaddr_un *)&addr->ss)->sun_path);
            char *slash = strrchr(dir, '/');
            if (slash && slash != dir) {
                *slash = '\0';
                if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                    snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
                    free(l); /* not on a->listeners yet */
                    admin_console_stop(a);
                    return -1;
                }
            }
        }
        l->fd = listener_open(addr, 128, err, errlen); /* scripts may connect in bursts */
        l->next = a->listeners;
        a->listeners = l;
        if (l->fd < 0) {
            admin_console_stop(a);
            return -1;
        }
        if (l->is_unix && chmod(((const struct sockaddr_un *)&addr->ss)->sun_path, 0600) < 0) {
            snprintf(err, errlen, "chmod 0600 %s: %s", addr->text, strerror(errno));
            admin_console_stop(a);
            return -1;
        }
        l->ev = event_new(a->base, l->fd, EV_READ | EV_PERSIST, accept_cb, l);
        l->resume_ev = evtimer_new(a->base, resume_accept_cb, l);
        if (!l->ev || !l->resume_ev || event_add(l->ev, NULL) < 0) {
            snprintf(err, errlen, "cannot watch %s", addr->text);
            admin_console_stop(a);
            return -1;
        }
        if (!l->is_unix && !is_loopback(addr))
            log_warn(addr->text, "the admin console listens beyond loopback: keep it firewalled");
        log_info(addr->text, "admin console listening");
    }
    *state = a;
    return 0;
}

void admin_console_reconfigure(void *state, const struct config *cfg)
{
    struct admin *a = state;
    const struct admin_config *ac = config_section(cfg, &admin_module);
    a->tls = ac->tls; /* new sessions get the new certificate; open ones keep theirs */
    if (set_secrets(a, ac) < 0)
        log_error(NULL, "admin: out of memory taking the new secrets; TCP logins fail until the "
                        "next reload");
    size_t n = 0;
    for (struct admin_listener *l = a->listeners; l; l = l->next)
        n++;
    int same = n == ac->nlisten;
    for (size_t i = 0; same && i < ac->nlisten; i++) {
        int found = 0;
        for (struct admin_listener *l = a->listeners; l && !found; l = l->next)
            found = strcmp(l->addr.text, ac->listen[i].text) == 0;
        same = found;
    }
    if (!same)
        log_warn(NULL, "admin listeners changed: the new ones open at restart");
}

void admin_console_stop(void *state)
{
    struct admin *a = state;
    if (!a)
        return;
    struct list *pos;
    while ((pos = list_first(&a->sessions)))
        session_free(list_entry(pos, struct admin_session, node));
    while (a->listeners) {
        struct admin_listener *l = a->listeners;
        a->listeners = l->next;
        if (l->ev)
            event_free(l->ev);
        if (l->resume_ev)
            event_free(l->resume_ev);
        if (l->fd >= 0) {
            close(l->fd);
            listener_unlink(&l->addr);
        }
        free(l);
    }
    forget_secrets(a);
    free(a);
}
