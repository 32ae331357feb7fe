/*
 * The chat service, worker side: one chat_user per connection.
 *
 * A user first answers "nickname?: ", then waits (reading off) while the
 * supervisor decides the join, then talks. Lines longer than max_line are
 * refused with a message and skipped up to the next line end; lines with
 * control characters are refused. A client whose unsent output passes
 * max_output is disconnected, so one slow reader never holds memory or
 * slows the room. While this worker's bus overflow is non-empty, speakers
 * stop being read (back-pressure to the client instead of unbounded
 * queueing).
 *
 * Users are never freed while their own callback runs: kicking marks the
 * user and closes it from a separate event (the reaper).
 */
#include "protocols/chat/chat.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/worker.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <search.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

enum user_state { U_NICK, U_JOINING, U_ROOM };

struct chat_user {
    struct chat_user *prev, *next; /* every user of this worker */
    struct chat_user *kick_next;
    struct conn *c;
    struct chat_worker *cw;
    const struct chat_cfg *cfg;
    enum user_state state;
    unsigned discarding : 1; /* inside an over-long line */
    unsigned kicked : 1;
    unsigned blocked : 1; /* reading paused for bus back-pressure */
    char nick[CHAT_NICK_MAX + 1];
};

struct chat_worker {
    struct worker *w;
    int proto;
    struct chat_user *users;
    struct chat_user *kicks;
    struct event *reap_ev;
    struct event *unblock_ev;
    size_t nblocked;
    void *roster; /* tsearch tree of char *: everyone in the room */
};

static const char *const chat_keys[] = {"max_line", "max_output", "idle_timeout", "sndbuf", NULL};

static int chat_parse(struct cfg_ctx *ctx, const config_setting_t *block, void **out)
{
    struct chat_cfg *c = calloc(1, sizeof *c);
    if (!c)
        return cfg_error(ctx, block, "out of memory");
    long long max_line = 1024, max_output = 256 * 1024, sndbuf = 0;
    c->idle_ms = 600 * 1000;
    if (cfg_int(ctx, block, "max_line", 16, 1 << 20, &max_line) < 0 ||
        cfg_int(ctx, block, "max_output", 1024, 1LL << 30, &max_output) < 0 ||
        cfg_int(ctx, block, "sndbuf", 0, 64 << 20, &sndbuf) < 0 ||
        cfg_duration_ms(ctx, block, "idle_timeout", 7 * 86400, &c->idle_ms) < 0) {
        free(c);
        return -1;
    }
    c->max_line = (unsigned)max_line;
    c->max_output = (unsigned)max_output;
    c->sndbuf = (unsigned)sndbuf;
    *out = c;
    return 0;
}

static int nick_cmp(const void *a, const void *b)
{
    return strcasecmp(a, b);
}

/* ---- output ---------------------------------------------------------- */

static void kick(struct chat_user *u, const char *why)
{
    if (u->kicked)
        return;
    u->kicked = 1;
    log_warn(u->c->peer, "chat: disconnecting %s: %s", u->nick[0] ? u->nick : "(no nick)", why);
    conn_count_error(u->c);
    bufferevent_disable(u->c->bev, EV_READ);
    u->kick_next = u->cw->kicks;
    u->cw->kicks = u;
    event_active(u->cw->reap_ev, EV_TIMEOUT, 0);
}

static void send_bytes(struct chat_user *u, const char *data, size_t len)
{
    if (u->kicked || u->c->closing)
        return;
    struct evbuffer *out = bufferevent_get_output(u->c->bev);
    if (evbuffer_get_length(out) + len > u->cfg->max_output) {
        kick(u, "output buffer full (client not reading)");
        return;
    }
    bufferevent_write(u->c->bev, data, len);
}

static void send_str(struct chat_user *u, const char *s)
{
    send_bytes(u, s, strlen(s));
}

static void sendf(struct chat_user *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sendf(struct chat_user *u, const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    send_bytes(u, s, (size_t)n);
    free(s);
}

/* To every local user in the room except `except`. */
static void say_local(struct chat_worker *cw, struct chat_user *except, const char *line,
                      size_t len)
{
    for (struct chat_user *u = cw->users; u; u = u->next)
        if (u != except && u->state == U_ROOM)
            send_bytes(u, line, len);
}

static void say_everywhere(struct chat_worker *cw, struct chat_user *from, const char *line)
{
    size_t len = strlen(line);
    if (from)
        stat_add(&cw->w->stats->requests, 1);
    say_local(cw, from, line, len);
    int n = bus_max_worker();
    for (int w = 1; w <= n; w++)
        if (w != cw->w->id && bus_is_live(w))
            chat_send_str(w, CHAT_LINE, 0, 0, line);
}

/* ---- the room replica ------------------------------------------------ */

struct listing {
    char *buf;
    size_t len, cap;
    const char *skip;
    int count;
};

static void list_one(const void *node, VISIT v, void *arg)
{
    struct listing *l = arg;
    if (v != postorder && v != leaf)
        return;
    const char *nick = *(char *const *)node;
    if (l->skip && strcasecmp(nick, l->skip) == 0)
        return;
    size_t n = strlen(nick);
    if (l->len + n + 3 > l->cap) {
        size_t cap = (l->cap + n + 3) * 2;
        char *b = realloc(l->buf, cap);
        if (!b)
            return;
        l->buf = b;
        l->cap = cap;
    }
    if (l->count++)
        l->len += (size_t)sprintf(l->buf + l->len, ", ");
    memcpy(l->buf + l->len, nick, n + 1);
    l->len += n;
}

/* "a, b, c" of everyone in the room but skip; caller frees. */
static char *roster_list(struct chat_worker *cw, const char *skip, int *count)
{
    struct listing l = {.skip = skip};
    l.buf = calloc(1, 1);
    l.cap = l.buf ? 1 : 0;
    twalk_r(cw->roster, list_one, &l);
    *count = l.count;
    return l.buf;
}

/* ---- input ----------------------------------------------------------- */

static void process_input(struct chat_user *u);

static int valid_nick(const char *s, size_t len)
{
    if (len == 0 || len > CHAT_NICK_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

static void on_nick(struct chat_user *u, const char *line, size_t len)
{
    if (!valid_nick(line, len)) {
        sendf(u,
              "* a nickname is 1 to %d letters, digits, '_', '-' or '.'\r\n"
              "nickname?: ",
              CHAT_NICK_MAX);
        return;
    }
    memcpy(u->nick, line, len);
    u->nick[len] = 0;
    u->state = U_JOINING;
    bufferevent_disable(u->c->bev, EV_READ);
    chat_send_str(BUS_SUPERVISOR, CHAT_JOIN, u->c->id, 0, u->nick);
}

static void on_line(struct chat_user *u, const char *line, size_t len)
{
    if (len == 0)
        return;
    if (line[0] == '/') {
        if (strcmp(line, "/quit") == 0) {
            send_str(u, "* bye\r\n");
            conn_close_after_flush(u->c, 2000);
        } else if (strcmp(line, "/who") == 0) {
            int n;
            char *list = roster_list(u->cw, NULL, &n);
            sendf(u, "* in the room (%d): %s\r\n", n, list ? list : "");
            free(list);
        } else if (strcmp(line, "/help") == 0) {
            send_str(u, "* commands: /who, /quit, /help\r\n");
        } else {
            sendf(u, "* unknown command %.*s; try /help\r\n", (int)(len > 32 ? 32 : len), line);
        }
        return;
    }
    char *msg;
    int n = asprintf(&msg, "%s: %.*s\r\n", u->nick, (int)len, line);
    if (n < 0)
        return;
    say_everywhere(u->cw, u, msg);
    free(msg);
}

static int has_control(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            return 1;
    return 0;
}

static void block_for_backpressure(struct chat_user *u)
{
    if (u->blocked)
        return;
    u->blocked = 1;
    u->cw->nblocked++;
    bufferevent_disable(u->c->bev, EV_READ);
    struct timeval tv = {0, 2000};
    event_add(u->cw->unblock_ev, &tv);
}

/* Once per over-long line, however many reads it spans. */
static void refuse_long_line(struct chat_user *u)
{
    if (u->discarding)
        return;
    sendf(u, "* line refused: longer than %u bytes\r\n", u->cfg->max_line);
    log_info(u->c->peer, "chat: over-long line refused");
    conn_count_error(u->c);
}

static void process_input(struct chat_user *u)
{
    struct evbuffer *in = bufferevent_get_input(u->c->bev);
    while (!u->kicked && !u->c->closing && u->state != U_JOINING) {
        if (u->state == U_ROOM && bus_backlog() > 0) {
            block_for_backpressure(u);
            return;
        }
        size_t eol_len = 0;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
        size_t avail = evbuffer_get_length(in);
        if (eol.pos < 0) {
            if (avail > u->cfg->max_line) {
                refuse_long_line(u);
                u->discarding = 1;
                evbuffer_drain(in, avail);
            }
            return;
        }
        size_t len = (size_t)eol.pos;
        if (u->discarding || len > u->cfg->max_line) {
            refuse_long_line(u);
            u->discarding = 0;
            evbuffer_drain(in, len + eol_len);
            continue;
        }
        char *line = malloc(len + 1);
        if (!line) {
            kick(u, "out of memory");
            return;
        }
        evbuffer_remove(in, line, len);
        evbuffer_drain(in, eol_len);
        line[len] = 0;
        if (has_control((unsigned char *)line, len)) {
            send_str(u, "* line refused: control characters\r\n");
            conn_count_error(u->c);
        } else if (u->state == U_NICK) {
            on_nick(u, line, len);
        } else {
            on_line(u, line, len);
        }
        free(line);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process_input(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct chat_user *u = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        log_info(u->c->peer, "chat: idle timeout");
        send_str(u, "* idle timeout, goodbye\r\n");
        conn_close_after_flush(u->c, 2000);
        return;
    }
    if (what & BEV_EVENT_ERROR)
        conn_count_error(u->c);
    conn_close(u->c);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct chat_worker *cw = arg;
    while (cw->kicks) {
        struct chat_user *u = cw->kicks;
        cw->kicks = u->kick_next;
        u->kick_next = NULL;
        u->kicked = 0; /* now off the list: closed() need not unlink it */
        conn_close(u->c);
    }
}

static void unblock_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct chat_worker *cw = arg;
    if (bus_backlog() > 0) {
        struct timeval tv = {0, 2000};
        event_add(cw->unblock_ev, &tv);
        return;
    }
    for (struct chat_user *u = cw->users, *next; u && cw->nblocked; u = next) {
        next = u->next;
        if (!u->blocked)
            continue;
        u->blocked = 0;
        cw->nblocked--;
        if (!u->kicked && !u->c->closing) {
            bufferevent_enable(u->c->bev, EV_READ);
            process_input(u);
        }
    }
}

/* ---- protocol callbacks ---------------------------------------------- */

static void *chat_worker_start(struct worker *w)
{
    struct chat_worker *cw = calloc(1, sizeof *cw);
    if (!cw)
        return NULL;
    cw->w = w;
    cw->proto = protocol_index(&chat_protocol);
    cw->reap_ev = event_new(w->base, -1, 0, reap_cb, cw);
    cw->unblock_ev = evtimer_new(w->base, unblock_cb, cw);
    /* A worker started by live scaling learns who is already here. */
    struct msg m = {.type = MSG_PROTO, .proto = (uint16_t)cw->proto, .sub = CHAT_SYNC};
    bus_send(BUS_SUPERVISOR, &m);
    return cw;
}

static void free_nick(void *p)
{
    free(p);
}

static void chat_worker_stop(void *state)
{
    struct chat_worker *cw = state;
    if (!cw)
        return;
    event_free(cw->reap_ev);
    event_free(cw->unblock_ev);
    tdestroy(cw->roster, free_nick);
    free(cw);
}

static void chat_accept(void *state, struct conn *c)
{
    struct chat_worker *cw = state;
    struct chat_user *u = cw ? calloc(1, sizeof *u) : NULL;
    if (!u) {
        log_error(c->peer, "chat: out of memory");
        conn_close(c);
        return;
    }
    u->c = c;
    u->cw = cw;
    u->cfg = c->svc->pcfg;
    c->proto_ctx = u;
    u->next = cw->users;
    if (cw->users)
        cw->users->prev = u;
    cw->users = u;
    if (u->cfg->sndbuf) {
        /* Bounds what the kernel holds for a client that stops reading
         * (autotuning lets a loopback socket queue megabytes). */
        int v = (int)u->cfg->sndbuf;
        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    }
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, u);
    if (u->cfg->idle_ms) {
        struct timeval tv = {u->cfg->idle_ms / 1000, (u->cfg->idle_ms % 1000) * 1000};
        bufferevent_set_timeouts(c->bev, &tv, NULL);
    }
    send_str(u, "nickname?: ");
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void chat_closed(void *state, struct conn *c)
{
    struct chat_worker *cw = state;
    struct chat_user *u = c->proto_ctx;
    if (!u)
        return;
    if (u->kicked) {
        for (struct chat_user **p = &cw->kicks; *p; p = &(*p)->kick_next)
            if (*p == u) {
                *p = u->kick_next;
                break;
            }
    }
    if (u->blocked)
        cw->nblocked--;
    if (u->state == U_ROOM)
        chat_send_str(BUS_SUPERVISOR, CHAT_LEAVE, 0, 0, u->nick);
    if (u->prev)
        u->prev->next = u->next;
    else
        cw->users = u->next;
    if (u->next)
        u->next->prev = u->prev;
    log_debug(c->peer, "chat: %s disconnected", u->nick[0] ? u->nick : "(no nick)");
    c->proto_ctx = NULL;
    free(u);
}

static void chat_stopping(void *state, struct conn *c, unsigned grace_ms)
{
    (void)state;
    struct chat_user *u = c->proto_ctx;
    if (u)
        sendf(u, "* the server is shutting down in %u s\r\n", (grace_ms + 999) / 1000);
}

static struct chat_user *find_user(struct chat_worker *cw, uint64_t conn_id)
{
    for (struct chat_user *u = cw->users; u; u = u->next)
        if (u->c->id == conn_id && u->state == U_JOINING)
            return u;
    return NULL;
}

/* Adds a nick to this worker's replica; 0 if it was there already (a
 * JOINED and the start-up roster may both bring it). */
static int roster_add(struct chat_worker *cw, struct msg *m)
{
    char *nick = m->ptr;
    void *node = tsearch(nick, &cw->roster, nick_cmp);
    if (!node) {
        log_error(NULL, "chat: out of memory tracking %s", nick);
        return 0;
    }
    if (*(char **)node != nick)
        return 0;  /* already known; m keeps (and frees) its copy */
    m->ptr = NULL; /* owned by the roster */
    return 1;
}

static void on_joined(struct chat_worker *cw, struct msg *m)
{
    char *nick = m->ptr;
    if (!roster_add(cw, m) && (int)m->b != cw->w->id)
        return;
    char line[CHAT_NICK_MAX + 16];
    int n = snprintf(line, sizeof line, "[%s joined]\r\n", nick);
    if ((int)m->b != cw->w->id) {
        say_local(cw, NULL, line, (size_t)n);
        return;
    }
    struct chat_user *u = find_user(cw, m->a);
    if (!u) { /* left while the supervisor was deciding */
        chat_send_str(BUS_SUPERVISOR, CHAT_LEAVE, 0, 0, nick);
        return;
    }
    int count;
    char *others = roster_list(cw, u->nick, &count);
    if (count)
        sendf(u, "* welcome, %s. Also here: %s\r\n", u->nick, others ? others : "");
    else
        sendf(u, "* welcome, %s. You are the first here.\r\n", u->nick);
    free(others);
    say_local(cw, u, line, (size_t)n);
    u->state = U_ROOM;
    log_info(u->c->peer, "chat: joined as %s", u->nick);
    bufferevent_enable(u->c->bev, EV_READ);
    process_input(u);
}

static void on_left(struct chat_worker *cw, const char *nick)
{
    void *found = tfind(nick, &cw->roster, nick_cmp);
    if (found) {
        char *owned = *(char **)found;
        tdelete(nick, &cw->roster, nick_cmp);
        free(owned);
    }
    char line[CHAT_NICK_MAX + 16];
    int n = snprintf(line, sizeof line, "[%s left]\r\n", nick);
    say_local(cw, NULL, line, (size_t)n);
}

static void chat_message(void *state, struct msg *m)
{
    struct chat_worker *cw = state;
    if (!cw) {
        msg_release(m);
        return;
    }
    switch (m->sub) {
    case CHAT_JOINED:
        on_joined(cw, m);
        break;
    case CHAT_TAKEN: {
        struct chat_user *u = find_user(cw, m->a);
        if (u) {
            sendf(u, "* nickname %s is taken\r\nnickname?: ", u->nick);
            u->nick[0] = 0;
            u->state = U_NICK;
            bufferevent_enable(u->c->bev, EV_READ);
            process_input(u);
        }
        break;
    }
    case CHAT_LEFT:
        on_left(cw, m->ptr);
        break;
    case CHAT_LINE:
        say_local(cw, NULL, m->ptr, m->len);
        break;
    case CHAT_ROSTER:
        roster_add(cw, m);
        break;
    default:
        log_error(NULL, "chat: unexpected message %u", m->sub);
    }
    msg_release(m);
}

static void chat_describe(void *state, struct conn *c, char *buf, size_t len)
{
    (void)state;
    const struct chat_user *u = c->proto_ctx;
    if (!u)
        return;
    static const char *const states[] = {"choosing a nickname", "joining", "in the room"};
    snprintf(buf, len, "%s%s%s", u->nick[0] ? u->nick : "", u->nick[0] ? ", " : "",
             states[u->state]);
}

const struct protocol chat_protocol = {
    .name = "chat",
    .keys = chat_keys,
    .tcp_nodelay = 1,
    .parse = chat_parse,
    .free_cfg = free,
    .worker_start = chat_worker_start,
    .worker_stop = chat_worker_stop,
    .accept = chat_accept,
    .closed = chat_closed,
    .stopping = chat_stopping,
    .message = chat_message,
    .sup_start = chat_room_start,
    .sup_stop = chat_room_stop,
    .sup_message = chat_room_message,
    .sup_admin = chat_room_admin,
    .describe = chat_describe,
};
