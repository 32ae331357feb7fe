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
 *
 * When the worker leaves, each user moves to another worker (conn_move)
 * with its nickname, its state and the numbers of the last room events it
 * was given; a user waiting for the supervisor's answer to a join moves
 * once the answer is in. chat.h explains how the receiving worker makes
 * sure the user misses no line and sees none twice.
 */
#include "protocols/chat/chat.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/list.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "core/stats.h"
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

/* A sender whose events up to `until` the user has already been given. */
struct chat_skip {
    int sender;
    uint64_t until;
};

struct chat_user {
    struct list node; /* every user of this worker */
    struct list kick; /* on the reaper's list while kicked */
    struct conn *c;
    struct chat_worker *cw;
    const struct chat_cfg *cfg;
    enum user_state state;
    unsigned discarding : 1; /* inside an over-long line */
    unsigned kicked : 1;
    unsigned blocked : 1; /* reading paused for bus back-pressure */
    unsigned moving : 1;  /* the worker leaves: move once the join is decided */
    unsigned nskip;
    struct chat_skip *skip;
    uint64_t join_seq; /* the supervisor's event that said this user joined */
    char nick[CHAT_NICK_MAX + 1];
};

/* A delivered room event, kept for users that move here. */
struct chat_past {
    int sender;
    uint64_t seq;
    const char *line;
    size_t len;
    void *owner; /* the heap block line lives in, freed when the event is forgotten */
};

struct chat_worker {
    struct worker *w;
    struct list users;
    struct list kicks;
    struct event *reap_ev;
    struct event *unblock_ev;
    size_t nblocked;
    void *roster;                       /* tsearch tree of char *: everyone in the room */
    uint64_t own_seq;                   /* this worker's events: its incarnation in the top bits */
    uint64_t recv[BUS_MAX_WORKERS + 1]; /* last event delivered, by sender */
    uint64_t evicted[BUS_MAX_WORKERS + 1]; /* newest event dropped from history */
    struct chat_past history[CHAT_HISTORY];
    unsigned hist_next, hist_count;
    struct chat_counters *counters;
};

/* What a moving user carries (the blob of conn_move). */
struct chat_move {
    enum user_state state;
    unsigned discarding;
    uint64_t conn, join_seq;
    char nick[CHAT_NICK_MAX + 1];
    unsigned nseen;
    struct chat_skip seen[]; /* sender -> last event given to the user */
};

static struct chat_counters counters[BUS_MAX_WORKERS + 1];
static _Atomic uint32_t incarnations;

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

static struct chat_user *user_of(struct list *pos)
{
    return list_entry(pos, struct chat_user, node);
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
    list_insert_tail(&u->cw->kicks, &u->kick);
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

/* Whether the user was already given this event on the worker it came
 * from; an entry goes once this worker has caught up with it. */
static int already_seen(struct chat_user *u, int sender, uint64_t seq, uint64_t recv)
{
    for (unsigned i = 0; i < u->nskip; i++) {
        if (u->skip[i].sender != sender)
            continue;
        int seen = seq <= u->skip[i].until;
        if (recv >= u->skip[i].until)
            u->skip[i] = u->skip[--u->nskip];
        return seen;
    }
    return 0;
}

/* Keeps the event for users that move here. owner is the heap block line
 * lives in, which the history now owns; NULL when line must be copied. */
static void remember(struct chat_worker *cw, int sender, uint64_t seq, const char *line, size_t len,
                     void *owner)
{
    struct chat_past *p = &cw->history[cw->hist_next];
    if (cw->hist_count == CHAT_HISTORY) {
        if (p->seq > cw->evicted[p->sender])
            cw->evicted[p->sender] = p->seq;
        free(p->owner);
    } else {
        cw->hist_count++;
    }
    if (!owner && (owner = malloc(len)))
        line = memcpy(owner, line, len);
    *p = (struct chat_past){sender, seq, owner ? line : "", owner ? len : 0, owner};
    cw->hist_next = (cw->hist_next + 1) % CHAT_HISTORY;
}

/* A room event: to every local user in the room except `except`; owner as
 * for remember(). */
static void deliver(struct chat_worker *cw, const struct chat_user *except, int sender,
                    uint64_t seq, const char *line, size_t len, void *owner)
{
    if (seq > cw->recv[sender])
        cw->recv[sender] = seq;
    remember(cw, sender, seq, line, len, owner);
    struct list *pos;
    /* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): u == except (NULL) is not pos == NULL */
    list_for_each(pos, &cw->users)
    {
        struct chat_user *u = user_of(pos);
        if (u == except || u->state != U_ROOM)
            continue;
        if (u->nskip && already_seen(u, sender, seq, cw->recv[sender]))
            continue;
        send_bytes(u, line, len);
    }
}

/* line (a heap string) goes to the history. */
static void say_everywhere(struct chat_worker *cw, struct chat_user *from, char *line)
{
    size_t len = strlen(line);
    uint64_t seq = ++cw->own_seq;
    stat_add(&cw->w->stats->requests, 1);
    stat_add(&cw->counters->lines, 1);
    deliver(cw, from, cw->w->id, seq, line, len, line);
    int n = bus_max_worker();
    for (int w = 1; w <= n; w++)
        if (w != cw->w->id && bus_is_live(w))
            chat_send_event(w, CHAT_LINE, seq, 0, 0, line, len);
}

/* ---- the room replica ------------------------------------------------ */

struct chat_listing {
    struct sbuf sb;
    const char *skip;
    int count;
};

static void list_one(const void *node, VISIT v, void *arg)
{
    struct chat_listing *l = arg;
    if (v != postorder && v != leaf)
        return;
    const char *nick = *(char *const *)node;
    if (l->skip && strcasecmp(nick, l->skip) == 0)
        return;
    if (l->count++)
        sb_adds(&l->sb, ", ");
    sb_adds(&l->sb, nick);
}

/* "a, b, c" of everyone in the room but skip; the caller frees. */
static char *roster_list(struct chat_worker *cw, const char *skip, int *count)
{
    struct chat_listing l = {.skip = skip};
    sb_adds(&l.sb, "");
    twalk_r(cw->roster, list_one, &l);
    *count = l.count;
    if (l.sb.failed)
        sb_free(&l.sb);
    return l.sb.p;
}

/* ---- moving users ---------------------------------------------------- */

static void user_free(struct chat_user *u)
{
    struct chat_worker *cw = u->cw;
    if (u->kicked)
        list_remove(&u->kick);
    if (u->blocked)
        cw->nblocked--;
    list_remove(&u->node);
    stat_sub(&cw->counters->sessions, 1);
    u->c->ctx = NULL;
    free(u->skip);
    free(u);
}

/* The last event of each sender the user has been given: what this worker
 * delivered, or more where it still skips for the user (it had those on the
 * worker it came from). 0 where it has nothing. */
static uint64_t seen_by(const struct chat_user *u, int sender)
{
    uint64_t seen = u->cw->recv[sender];
    for (unsigned i = 0; i < u->nskip; i++)
        if (u->skip[i].sender == sender && u->skip[i].until > seen)
            seen = u->skip[i].until;
    return seen;
}

/* A move that did not happen (the server stops, no memory): the user is
 * gone, and the room hears so. Any thread. */
static void chat_move_free(void *blob)
{
    struct chat_move *mv = blob;
    if (mv->state == U_ROOM)
        chat_send_str(BUS_SUPERVISOR, CHAT_LEAVE, mv->conn, mv->nick);
    free(mv);
}

static void move_user(struct chat_user *u)
{
    unsigned n = 0;
    for (int s = 0; u->state == U_ROOM && s <= BUS_MAX_WORKERS; s++)
        n += seen_by(u, s) != 0;
    struct chat_move *mv = calloc(1, sizeof *mv + n * sizeof *mv->seen);
    struct conn *c = u->c;
    if (!mv) {
        log_error(c->peer, "chat: out of memory moving %s; disconnected", u->nick);
        conn_close(c);
        return;
    }
    mv->state = u->state;
    mv->discarding = u->discarding;
    mv->conn = c->id;
    mv->join_seq = u->join_seq;
    memcpy(mv->nick, u->nick, sizeof mv->nick);
    for (int s = 0; u->state == U_ROOM && s <= BUS_MAX_WORKERS; s++) {
        uint64_t seen = seen_by(u, s);
        if (seen)
            mv->seen[mv->nseen++] = (struct chat_skip){s, seen};
    }
    user_free(u);
    conn_move(c, mv, chat_move_free);
}

/* The i-th oldest event this worker remembers. */
static const struct chat_past *past(const struct chat_worker *cw, unsigned i)
{
    return &cw->history[(cw->hist_next + CHAT_HISTORY - cw->hist_count + i) % CHAT_HISTORY];
}

/* The user was given events up to mv->seen on the worker it left: replay
 * what this worker delivered beyond that, and mark what the user already
 * has for skipping. */
static void catch_up(struct chat_worker *cw, struct chat_user *u, const struct chat_move *mv)
{
    uint64_t seen[BUS_MAX_WORKERS + 1] = {0};
    for (unsigned i = 0; i < mv->nseen; i++)
        seen[mv->seen[i].sender] = mv->seen[i].until;
    for (int s = 0; s <= BUS_MAX_WORKERS; s++) {
        if (seen[s] > cw->recv[s]) {
            struct chat_skip *k = realloc(u->skip, (u->nskip + 1) * sizeof *k);
            if (!k) {
                log_error(u->c->peer, "chat: out of memory; %s may see some lines twice", u->nick);
                continue;
            }
            u->skip = k;
            k[u->nskip++] = (struct chat_skip){s, seen[s]};
        } else if (seen[s] < cw->evicted[s] && cw->recv[s] > seen[s]) {
            log_warn(u->c->peer, "chat: some lines for %s were older than the last %d", u->nick,
                     CHAT_HISTORY);
        }
    }
    /* Nothing from before the user joined: replay only what this worker
     * delivered after the join (all it has, if the join is older). */
    unsigned first = 0;
    for (unsigned i = 0; i < cw->hist_count; i++) {
        const struct chat_past *p = past(cw, i);
        if (p->sender == BUS_SUPERVISOR && p->seq == mv->join_seq)
            first = i + 1;
    }
    for (unsigned i = first; i < cw->hist_count; i++) {
        const struct chat_past *p = past(cw, i);
        if (p->seq > seen[p->sender])
            send_bytes(u, p->line, p->len);
    }
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
    chat_send_str(BUS_SUPERVISOR, CHAT_JOIN, u->c->id, u->nick);
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

/* Once per over-long line, however many reads it spans (conn_next_line). */
static void refuse_long_line(struct chat_user *u)
{
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
        size_t len, skip;
        unsigned discarding = u->discarding;
        enum conn_line got = conn_next_line(in, u->cfg->max_line, &discarding, &len, &skip);
        u->discarding = discarding & 1;
        if (got == CONN_LINE_TOO_LONG) {
            refuse_long_line(u);
            continue;
        }
        if (got == CONN_LINE_NONE)
            return;
        char *line = malloc(len + 1);
        if (!line) {
            kick(u, "out of memory");
            return;
        }
        evbuffer_remove(in, line, len);
        evbuffer_drain(in, skip - len);
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
    struct list *pos;
    while ((pos = list_first(&cw->kicks)))
        conn_close(list_entry(pos, struct chat_user, kick)->c);
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
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &cw->users)
    {
        struct chat_user *u = user_of(pos);
        if (!cw->nblocked)
            break;
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

/* ---- module callbacks ------------------------------------------------ */

static void *chat_worker_init(struct worker *w)
{
    struct chat_worker *cw = calloc(1, sizeof *cw);
    if (!cw)
        return NULL;
    cw->w = w;
    list_init(&cw->users);
    list_init(&cw->kicks);
    cw->own_seq = (uint64_t)(atomic_fetch_add(&incarnations, 1) + 1) << 40;
    cw->counters = &counters[w->id];
    /* Others may be reading the slot (the status page): atomic stores. */
    atomic_store_explicit(&cw->counters->sessions, 0, memory_order_relaxed);
    atomic_store_explicit(&cw->counters->lines, 0, memory_order_relaxed);
    atomic_store_explicit(&cw->counters->moved_in, 0, memory_order_relaxed);
    cw->reap_ev = event_new(w->base, -1, 0, reap_cb, cw);
    cw->unblock_ev = evtimer_new(w->base, unblock_cb, cw);
    if (!cw->reap_ev || !cw->unblock_ev) {
        if (cw->reap_ev)
            event_free(cw->reap_ev);
        free(cw);
        return NULL;
    }
    /* A worker started by live scaling learns who is already here. */
    struct msg m = {.module = (uint16_t)module_id(&chat_module), .type = CHAT_SYNC};
    bus_send(BUS_SUPERVISOR, &m);
    return cw;
}

static void free_nick(void *p)
{
    free(p);
}

static void chat_worker_dispose(void *state)
{
    struct chat_worker *cw = state;
    event_free(cw->reap_ev);
    event_free(cw->unblock_ev);
    tdestroy(cw->roster, free_nick);
    for (unsigned i = 0; i < cw->hist_count; i++)
        free(cw->history[i].owner);
    free(cw);
}

/* accept and adopt: a user for connection c. */
static struct chat_user *user_new(struct chat_worker *cw, struct conn *c)
{
    struct chat_user *u = calloc(1, sizeof *u);
    if (!u) {
        log_error(c->peer, "chat: out of memory");
        conn_close(c);
        return NULL;
    }
    u->c = c;
    u->cw = cw;
    u->cfg = c->svc->pcfg;
    c->ctx = u;
    list_insert_head(&cw->users, &u->node);
    list_init(&u->kick);
    stat_add(&cw->counters->sessions, 1);
    if (u->cfg->sndbuf) {
        /* Bounds what the kernel holds for a client that stops reading
         * (autotuning lets a loopback socket queue megabytes). */
        int v = (int)u->cfg->sndbuf;
        setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    }
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, u);
    if (u->cfg->idle_ms) {
        struct timeval tv = {u->cfg->idle_ms / 1000, (u->cfg->idle_ms % 1000) * 1000};
        bufferevent_set_timeouts(c->bev, &tv, NULL);
    }
    return u;
}

static void chat_accept(void *state, struct conn *c)
{
    struct chat_user *u = user_new(state, c);
    if (!u)
        return;
    send_str(u, "nickname?: ");
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void chat_adopt(void *state, struct conn *c, void *blob)
{
    struct chat_worker *cw = state;
    struct chat_move *mv = blob;
    struct chat_user *u = user_new(cw, c);
    if (u) {
        stat_add(&cw->counters->moved_in, 1);
        u->state = mv->state;
        u->discarding = mv->discarding;
        u->join_seq = mv->join_seq;
        memcpy(u->nick, mv->nick, sizeof u->nick);
        if (u->state == U_ROOM)
            catch_up(cw, u, mv);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        process_input(u); /* what it sent before it moved */
    }
    free(mv);
}

static void chat_closed(void *state, struct conn *c)
{
    (void)state;
    struct chat_user *u = c->ctx;
    if (!u)
        return;
    /* A user still waiting for the join leaves too: its worker may be gone
     * when the supervisor's answer comes. */
    if (u->state != U_NICK)
        chat_send_str(BUS_SUPERVISOR, CHAT_LEAVE, c->id, u->nick);
    log_debug(c->peer, "chat: %s disconnected", u->nick[0] ? u->nick : "(no nick)");
    user_free(u);
}

static void chat_drain(void *state, struct conn *c, unsigned grace_ms, int move)
{
    (void)state;
    struct chat_user *u = c->ctx;
    if (!u || u->kicked || c->closing)
        return;
    if (!move) {
        u->moving = 0;
        if (c->w->leaving) /* (a TLS session: it cannot move) */
            sendf(u,
                  "* this worker is leaving and a TLS session cannot move: closing in %u s; "
                  "please reconnect\r\n",
                  (grace_ms + 999) / 1000);
        else
            sendf(u, "* the server is shutting down in %u s\r\n", (grace_ms + 999) / 1000);
    } else if (u->state == U_JOINING) {
        u->moving = 1; /* once the supervisor has answered */
    } else {
        move_user(u);
    }
}

static struct chat_user *find_joining(struct chat_worker *cw, uint64_t conn_id)
{
    struct list *pos;
    list_for_each(pos, &cw->users)
    {
        struct chat_user *u = user_of(pos);
        if (u->c->id == conn_id && u->state == U_JOINING)
            return u;
    }
    return NULL;
}

/* Adds a nick to this worker's replica; 0 if it was there already (a
 * JOINED and the start-up roster may both bring it). */
static int roster_add(struct chat_worker *cw, const char *nick)
{
    char *copy = strdup(nick);
    void *node = copy ? tsearch(copy, &cw->roster, nick_cmp) : NULL;
    if (!node) {
        log_error(NULL, "chat: out of memory tracking %s", nick);
        free(copy);
        return 0;
    }
    if (*(char **)node != copy) {
        free(copy);
        return 0;
    }
    return 1;
}

static void on_joined(struct chat_worker *cw, int from, const struct chat_event *ev)
{
    const char *nick = ev->text;
    int added = roster_add(cw, nick);
    char line[CHAT_NICK_MAX + 16];
    int n = snprintf(line, sizeof line, "[%s joined]\r\n", nick);
    if (ev->worker != cw->w->id) {
        if (added)
            deliver(cw, NULL, from, ev->seq, line, (size_t)n, NULL);
        return;
    }
    struct chat_user *u = find_joining(cw, ev->conn);
    if (!u) { /* left while the supervisor was deciding */
        chat_send_str(BUS_SUPERVISOR, CHAT_LEAVE, ev->conn, nick);
        return;
    }
    int count;
    char *others = roster_list(cw, u->nick, &count);
    if (count)
        sendf(u, "* welcome, %s. Also here: %s\r\n", u->nick, others ? others : "");
    else
        sendf(u, "* welcome, %s. You are the first here.\r\n", u->nick);
    free(others);
    deliver(cw, u, from, ev->seq, line, (size_t)n, NULL);
    u->state = U_ROOM;
    u->join_seq = ev->seq;
    log_info(u->c->peer, "chat: joined as %s", u->nick);
    if (u->moving) {
        move_user(u);
        return;
    }
    bufferevent_enable(u->c->bev, EV_READ);
    process_input(u);
}

static void on_taken(struct chat_worker *cw, uint64_t conn_id)
{
    struct chat_user *u = find_joining(cw, conn_id);
    if (!u)
        return;
    sendf(u, "* nickname %s is taken\r\nnickname?: ", u->nick);
    u->nick[0] = 0;
    u->state = U_NICK;
    if (u->moving) {
        move_user(u);
        return;
    }
    bufferevent_enable(u->c->bev, EV_READ);
    process_input(u);
}

static void on_left(struct chat_worker *cw, int from, const struct chat_event *ev)
{
    void *found = tfind(ev->text, &cw->roster, nick_cmp);
    if (found) {
        char *owned = *(char **)found;
        tdelete(ev->text, &cw->roster, nick_cmp);
        free(owned);
    }
    char line[CHAT_NICK_MAX + 16];
    int n = snprintf(line, sizeof line, "[%s left]\r\n", ev->text);
    deliver(cw, NULL, from, ev->seq, line, (size_t)n, NULL);
}

static void chat_message(void *state, struct msg *m)
{
    struct chat_worker *cw = state;
    const struct chat_event *ev = m->ptr;
    switch (m->type) {
    case CHAT_JOINED:
        on_joined(cw, m->from, ev);
        break;
    case CHAT_TAKEN:
        on_taken(cw, m->a);
        break;
    case CHAT_LEFT:
        on_left(cw, m->from, ev);
        break;
    case CHAT_LINE:
        deliver(cw, NULL, m->from, ev->seq, ev->text, ev->len, m->ptr);
        m->ptr = NULL; /* the history has it now */
        break;
    case CHAT_ROSTER:
        roster_add(cw, m->ptr);
        break;
    default:
        log_error(NULL, "chat: unexpected message %u", m->type);
    }
    msg_release(m);
}

static void chat_describe(void *state, struct conn *c, char *buf, size_t len)
{
    (void)state;
    const struct chat_user *u = c->ctx;
    if (!u)
        return;
    static const char *const states[] = {"choosing a nickname", "joining", "in the room"};
    snprintf(buf, len, "%s%s%s", u->nick[0] ? u->nick : "", u->nick[0] ? ", " : "",
             states[u->state]);
}

static void chat_stats(const struct config *cfg, enum module_stats_format fmt, struct sbuf *sb)
{
    (void)cfg;
    uint64_t sessions = 0, lines = 0, moved = 0;
    for (int w = 1; w <= bus_max_worker(); w++) { /* workers that left count too */
        sessions += stat_get(&counters[w].sessions);
        lines += stat_get(&counters[w].lines);
        moved += stat_get(&counters[w].moved_in);
    }
    unsigned long long users = atomic_load_explicit(&chat_room_users, memory_order_relaxed);
    if (fmt == MODULE_STATS_PROM) {
        /* sessions goes down as users leave: a gauge */
        static const char *const names[] = {"room_users", "sessions_active", "lines", "moved"};
        const uint64_t v[] = {users, sessions, lines, moved};
        stats_counters(sb, fmt, "chat", names, v, 4);
        return;
    }
    if (fmt == MODULE_STATS_JSON)
        sb_addf(sb, "{\"room_users\":%llu,\"sessions\":%llu,\"lines\":%llu,\"moved\":%llu}", users,
                (unsigned long long)sessions, (unsigned long long)lines, (unsigned long long)moved);
    else
        sb_addf(sb, "chat: %llu in the room, %llu sessions, %llu lines said, %llu moved\n", users,
                (unsigned long long)sessions, (unsigned long long)lines, (unsigned long long)moved);
}

const struct module chat_module = {
    .name = "chat",
    .flags = MODULE_TCP_NODELAY,
    .busy_reply = "* Too many connections from your address; try again later.\r\n",
    .keys = chat_keys,
    .parse = chat_parse,
    .free_cfg = free,
    .worker_init = chat_worker_init,
    .worker_dispose = chat_worker_dispose,
    .accept = chat_accept,
    .closed = chat_closed,
    .drain = chat_drain,
    .adopt = chat_adopt,
    .describe = chat_describe,
    .message = chat_message,
    .sup_init = chat_room_start,
    .sup_dispose = chat_room_stop,
    .sup_message = chat_room_message,
    .stats = chat_stats,
    .commands = chat_commands,
};
