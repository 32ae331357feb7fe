/*
 * The admin console; see console.h. This file has the listeners,
 * sessions, authentication and the questions to workers; the commands
 * themselves are in commands.c.
 *
 * Sessions are bufferevents on the supervisor's loop. A line is read,
 * split into words and looked up in the command table, which says the level
 * a command needs (operator: every read-only command; admin: everything).
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
#include "admin/console.h"

#include "admin/console_impl.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/supervisor.h"
#include "protocols/protocol.h"
#include "protocols/http/http.h"
#include "core/sbuf.h"
#include "version.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
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
#define AUTH_S 10  /* seconds a TCP session has to authenticate */
#define IDLE_S 600 /* seconds an idle session is kept */

const char *const admin_level_names[] = {"none", "operator", "admin"};

/* ---- replies ---- */

void admin_reply(struct session *s, int status, const char *body, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out, "%d %zu\n", status, len);
    evbuffer_add(out, body, len);
}

void admin_replyf(struct session *s, int status, const char *fmt, ...)
{
    struct sbuf sb = {0};
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        admin_reply(s, 500, "out of memory\n", 14);
        return;
    }
    sb_add(&sb, text, (size_t)n);
    free(text);
    admin_reply(s, status, sb.p ? sb.p : "", sb.len);
    sb_free(&sb);
}

static void session_free(struct session *s)
{
    struct admin *a = s->a;
    if (s->prev)
        s->prev->next = s->next;
    else
        a->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    a->nsessions--;
    if (s->query) {
        event_free(s->query->timeout);
        sb_free(&s->query->sb);
        free(s->query);
    }
    if (s->delay_ev)
        event_free(s->delay_ev);
    bufferevent_free(s->bev);
    free(s);
}

void admin_close_after_write(struct session *s)
{
    s->closing = 1;
    bufferevent_disable(s->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
        session_free(s);
}

void admin_send_sb(struct session *s, int status, struct sbuf *sb)
{
    if (sb->failed)
        admin_reply(s, 500, "out of memory\n", 14);
    else
        admin_reply(s, status, sb->p ? sb->p : "", sb->len);
    sb_free(sb);
}

/* ---- questions to workers ---- */

static void read_cb(struct bufferevent *bev, void *arg);

static void query_finish(struct query *q)
{
    struct session *s = q->s;
    s->query = NULL;
    event_free(q->timeout);
    int missing = q->expected - q->got;
    struct sbuf out = {0};
    int status = admin_query_format(q, &out);
    if (missing > 0) {
        status = 500;
        sb_addf(&out, "(%d worker%s did not answer within %d ms)\n", missing,
                missing == 1 ? "" : "s", QUERY_MS);
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

void admin_message(struct admin *a, struct msg *m)
{
    for (struct session *s = a->sessions; s; s = s->next) {
        struct query *q = s->query;
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
void admin_ask(struct session *s, int kind, int worker, uint64_t arg, const char *text,
               const char *what, int json)
{
    struct admin *a = s->a;
    struct query *q = calloc(1, sizeof *q);
    if (!q || !(q->timeout = evtimer_new(a->base, query_timeout, q))) {
        free(q);
        admin_reply(s, 500, "out of memory\n", 14);
        return;
    }
    q->id = ++a->next_query;
    q->kind = kind;
    q->json = json;
    q->s = s;
    snprintf(q->what, sizeof q->what, "%s", what ? what : "");
    s->query = q;
    bufferevent_disable(s->bev, EV_READ);
    q->expected = sup_ask_workers(a->sup, worker, kind, q->id, arg, text);
    if (q->expected == 0) {
        query_finish(q);
        return;
    }
    struct timeval tv = {QUERY_MS / 1000, (QUERY_MS % 1000) * 1000};
    evtimer_add(q->timeout, &tv);
}

int admin_worker_exists(struct session *s, int id)
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
    struct session *s = arg;
    admin_replyf(s, 401, "authentication failed\n");
    admin_close_after_write(s);
}

static void authenticate(struct session *s, int argc, char **argv)
{
    struct admin *a = s->a;
    if (argc == 2 && hmac_matches(a->secret, s->challenge, argv[1]))
        s->level = L_ADMIN;
    else if (argc == 2 && hmac_matches(a->operator_secret, s->challenge, argv[1]))
        s->level = L_OPERATOR;
    if (s->level) {
        memset(s->challenge, 0, sizeof s->challenge); /* one use only */
        struct timeval idle = {IDLE_S, 0};
        bufferevent_set_timeouts(s->bev, &idle, &idle);
        log_info(s->peer, "admin session authenticated (%s)", admin_level_names[s->level]);
        admin_replyf(s, 200, "authenticated as %s\n", admin_level_names[s->level]);
        return;
    }
    a->auth_failures++;
    log_warn(s->peer, "admin authentication failed (%lu failures since start)", a->auth_failures);
    /* Answer late and close: a guesser gets one try per connection and
     * second; the challenge dies with the session. */
    bufferevent_disable(s->bev, EV_READ);
    s->delay_ev = evtimer_new(a->base, fail_cb, s);
    struct timeval tv = {FAIL_DELAY_MS / 1000, (FAIL_DELAY_MS % 1000) * 1000};
    if (!s->delay_ev || evtimer_add(s->delay_ev, &tv) < 0)
        fail_cb(-1, 0, s);
}

/* ---- sessions ---- */

static void run_line(struct session *s, char *line)
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
    if (s->level == L_NONE) {
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
    for (const struct command *c = admin_commands; c->name; c++) {
        if (strcmp(c->name, argv[0]) != 0)
            continue;
        if (s->level < c->level) {
            log_warn(s->peer, "admin command '%s' refused: needs level %s", argv[0],
                     admin_level_names[c->level]);
            admin_replyf(s, 401, "'%s' needs level %s; this session is %s\n", argv[0],
                         admin_level_names[c->level], admin_level_names[s->level]);
            return;
        }
        log_info(s->peer, "admin command: %s%s%s", argv[0], argc > 1 ? " " : "",
                 argc > 1 ? argv[1] : "");
        c->fn(s, argc, argv);
        return;
    }
    admin_replyf(s, 400, "unknown command '%.64s'; try 'help'\n", argv[0]);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!s->closing && !s->delay_ev) {
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
        } else if (memchr(line, '\0', len)) {
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
    struct session *s = arg;
    if (s->closing)
        session_free(s);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct session *s = arg;
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

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct alistener *l = arg;
    struct admin *a = l->a;
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_error(l->addr.text, "admin accept: %s", strerror(errno));
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
        struct session *s = calloc(1, sizeof *s);
        struct bufferevent *bev =
            s ? bufferevent_socket_new(a->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
        if (!bev) {
            free(s);
            close(fd);
            log_error(peer, "out of memory for an admin session");
            continue;
        }
        s->a = a;
        s->bev = bev;
        s->is_tcp = !l->is_unix;
        snprintf(s->peer, sizeof s->peer, "%s", peer);
        s->next = a->sessions;
        if (a->sessions)
            a->sessions->prev = s;
        a->sessions = s;
        a->nsessions++;
        bufferevent_setcb(bev, read_cb, write_cb, event_cb, s);
        /* An idle console session does not hold a slot for ever, and one
         * that has not authenticated holds it only briefly. */
        struct timeval idle = {l->is_unix ? IDLE_S : AUTH_S, 0};
        bufferevent_set_timeouts(bev, &idle, &idle);
        if (a->nsessions > a->max_sessions) {
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
            admin_reply(s, 401, s->challenge, 64);
        } else {
            s->level = L_ADMIN;
        }
        log_info(peer, "admin session opened%s", s->is_tcp ? " (authenticating)" : " (admin)");
    }
}

static void set_secrets(struct admin *a, const struct config *cfg)
{
    free(a->secret);
    free(a->operator_secret);
    a->secret = cfg->admin.secret ? strdup(cfg->admin.secret) : NULL;
    a->operator_secret = cfg->admin.operator_secret ? strdup(cfg->admin.operator_secret) : NULL;
    a->max_sessions = cfg->admin.max_sessions;
}

static int is_loopback(const struct listen_addr *a)
{
    if (a->family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
    if (a->family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
    return 1;
}

struct admin *admin_start(struct event_base *base, struct supervisor *sup, const struct config *cfg,
                          char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->base = base;
    a->sup = sup;
    set_secrets(a, cfg);
    for (size_t i = 0; i < cfg->admin.nlisten; i++) {
        const struct listen_addr *addr = &cfg->admin.listen[i];
        struct alistener *l = calloc(1, sizeof *l);
        if (!l) {
            snprintf(err, errlen, "out of memory");
            admin_stop(a);
            return NULL;
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
                    admin_stop(a);
                    return NULL;
                }
            }
        }
        l->fd = listener_open(addr, 128, err, errlen); /* scripts may connect in bursts */
        l->next = a->listeners;
        a->listeners = l;
        if (l->fd < 0) {
            admin_stop(a);
            return NULL;
        }
        if (l->is_unix && chmod(((const struct sockaddr_un *)&addr->ss)->sun_path, 0600) < 0) {
            snprintf(err, errlen, "chmod 0600 %s: %s", addr->text, strerror(errno));
            admin_stop(a);
            return NULL;
        }
        l->ev = event_new(base, l->fd, EV_READ | EV_PERSIST, accept_cb, l);
        if (!l->ev || event_add(l->ev, NULL) < 0) {
            snprintf(err, errlen, "cannot watch %s", addr->text);
            admin_stop(a);
            return NULL;
        }
        if (!l->is_unix && !is_loopback(addr))
            log_warn(addr->text, "the admin console listens beyond loopback: keep it firewalled");
        log_info(addr->text, "admin console listening");
    }
    return a;
}

void admin_reconfigure(struct admin *a, const struct config *cfg)
{
    set_secrets(a, cfg);
    size_t n = 0;
    for (struct alistener *l = a->listeners; l; l = l->next)
        n++;
    int same = n == cfg->admin.nlisten;
    for (size_t i = 0; same && i < cfg->admin.nlisten; i++) {
        int found = 0;
        for (struct alistener *l = a->listeners; l && !found; l = l->next)
            found = strcmp(l->addr.text, cfg->admin.listen[i].text) == 0;
        same = found;
    }
    if (!same)
        log_warn(NULL, "admin listeners changed: the new ones open at restart");
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    while (a->sessions)
        session_free(a->sessions);
    while (a->listeners) {
        struct alistener *l = a->listeners;
        a->listeners = l->next;
        if (l->ev)
            event_free(l->ev);
        if (l->fd >= 0) {
            close(l->fd);
            listener_unlink(&l->addr);
        }
        free(l);
    }
    if (a->secret)
        OPENSSL_cleanse(a->secret, strlen(a->secret));
    if (a->operator_secret)
        OPENSSL_cleanse(a->operator_secret, strlen(a->operator_secret));
    free(a->secret);
    free(a->operator_secret);
    free(a);
}
