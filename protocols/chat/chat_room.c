/*
 * The room's directory, on the supervisor: which nicknames are taken. It
 * decides joins (first come, first served, case-insensitively), numbers the
 * room events it sends (joins, departures, operator notices; see chat.h),
 * and answers the console's "chat who" and "chat say".
 */
#include "protocols/chat/chat.h"

#include "core/bus.h"
#include "core/log.h"
#include "core/sbuf.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A nickname taken, and by which connection: only that connection's
 * departure frees it (a late or repeated leave cannot free someone else's). */
struct chat_member {
    uint64_t conn;
    char nick[CHAT_NICK_MAX + 1];
};

struct chat_room {
    void *members; /* tsearch tree of struct chat_member *, by nick */
    size_t count;
    uint64_t seq; /* the supervisor's room events */
};

_Atomic uint64_t chat_room_users;

static int member_cmp(const void *a, const void *b)
{
    return strcasecmp(((const struct chat_member *)a)->nick, ((const struct chat_member *)b)->nick);
}

static struct chat_member key(const char *nick)
{
    struct chat_member k = {0};
    snprintf(k.nick, sizeof k.nick, "%s", nick);
    return k;
}

void chat_send_str(int to, enum chat_msg type, uint64_t a, const char *s)
{
    char *copy = strdup(s);
    if (!copy) {
        log_error(NULL, "chat: out of memory sending to thread %d", to);
        return;
    }
    struct msg m = {.module = (uint16_t)module_id(&chat_module),
                    .type = (uint16_t)type,
                    .len = (uint32_t)strlen(s),
                    .a = a,
                    .ptr = copy,
                    .free_fn = free};
    bus_send(to, &m);
}

void chat_send_event(int to, enum chat_msg type, uint64_t seq, uint64_t conn, int worker,
                     const char *text, size_t len)
{
    struct chat_event *ev = malloc(sizeof *ev + len + 1);
    if (!ev) {
        log_error(NULL, "chat: out of memory sending to thread %d", to);
        return;
    }
    ev->seq = seq;
    ev->conn = conn;
    ev->worker = worker;
    ev->len = len;
    memcpy(ev->text, text, len);
    ev->text[len] = '\0';
    struct msg m = {.module = (uint16_t)module_id(&chat_module),
                    .type = (uint16_t)type,
                    .ptr = ev,
                    .free_fn = free};
    bus_send(to, &m);
}

/* `last` (a worker id, or 0) is sent to after everyone else. */
static void to_all_workers(struct chat_room *r, enum chat_msg type, uint64_t conn, int worker,
                           const char *text, int last)
{
    uint64_t seq = ++r->seq;
    size_t len = strlen(text);
    int n = bus_max_worker();
    for (int w = 1; w <= n; w++)
        if (w != last && bus_is_live(w))
            chat_send_event(w, type, seq, conn, worker, text, len);
    if (last)
        chat_send_event(last, type, seq, conn, worker, text, len);
}

int chat_room_start(struct supervisor *s, const struct config *cfg, void **state, char *err,
                    size_t errlen)
{
    (void)s;
    (void)cfg;
    if ((*state = calloc(1, sizeof(struct chat_room))))
        return 0;
    snprintf(err, errlen, "out of memory for the room");
    return -1;
}

void chat_room_stop(void *arg)
{
    struct chat_room *r = arg;
    tdestroy(r->members, free);
    free(r);
}

static const char *nick_of(const void *node)
{
    return (*(struct chat_member *const *)node)->nick;
}

static void sync_one(const void *node, VISIT v, void *arg)
{
    const int *to = arg;
    if (v == postorder || v == leaf)
        chat_send_str(*to, CHAT_ROSTER, 0, nick_of(node));
}

static void refuse(struct msg *m)
{
    struct msg t = {.module = m->module, .type = CHAT_TAKEN, .a = m->a};
    bus_send(m->from, &t);
}

void chat_room_message(void *arg, struct msg *m)
{
    struct chat_room *r = arg;
    const char *nick = m->ptr;
    struct chat_member k = key(nick ? nick : "");
    switch (m->type) {
    case CHAT_JOIN: {
        struct chat_member *mb = tfind(&k, &r->members, member_cmp) ? NULL : malloc(sizeof *mb);
        if (!mb) {
            refuse(m); /* taken (or no memory) */
            break;
        }
        *mb = k;
        mb->conn = m->a;
        if (!tsearch(mb, &r->members, member_cmp)) {
            log_error(NULL, "chat: out of memory adding %s", nick);
            free(mb);
            refuse(m);
            break;
        }
        r->count++;
        atomic_store_explicit(&chat_room_users, r->count, memory_order_relaxed);
        /* The joiner's worker hears last: by the time it lets the user
         * speak, every other inbox already holds the JOINED, so no worker
         * hears from (or about) a user before it knows of them. */
        to_all_workers(r, CHAT_JOINED, m->a, m->from, nick, m->from);
        log_info("chat", "%s joined on worker %u (%zu in the room)", nick, m->from, r->count);
        break;
    }
    case CHAT_LEAVE: {
        void *found = tfind(&k, &r->members, member_cmp);
        if (!found || (*(struct chat_member **)found)->conn != m->a)
            break; /* not this connection's (any more) */
        struct chat_member *owned = *(struct chat_member **)found;
        tdelete(&k, &r->members, member_cmp);
        r->count--;
        atomic_store_explicit(&chat_room_users, r->count, memory_order_relaxed);
        to_all_workers(r, CHAT_LEFT, 0, m->from, nick, 0);
        log_info("chat", "%s left (%zu in the room)", nick, r->count);
        free(owned);
        break;
    }
    case CHAT_SYNC: {
        /* A worker started after users joined (live scaling): give it the
         * room. Later JOINED/LEFT come after these, from the same sender. */
        int to = m->from;
        twalk_r(r->members, sync_one, &to);
        break;
    }
    default:
        log_error(NULL, "chat: unexpected message %u from thread %u", m->type, m->from);
    }
    msg_release(m);
}

/* ---- the console's "chat who" and "chat say" ---- */

struct chat_who {
    struct sbuf *out;
    int count;
};

static void who_one(const void *node, VISIT v, void *arg)
{
    struct chat_who *w = arg;
    if (v == postorder || v == leaf) {
        sb_addf(w->out, "%s\n", nick_of(node));
        w->count++;
    }
}

static int cmd_who(void *arg, int argc, char **argv, struct sbuf *out)
{
    (void)argv;
    struct chat_room *r = arg;
    if (argc != 2) {
        sb_adds(out, "usage: chat who\n");
        return 400;
    }
    struct chat_who w = {out, 0};
    twalk_r(r->members, who_one, &w);
    if (!w.count)
        sb_adds(out, "(nobody is in the room)\n");
    return 200;
}

static int cmd_say(void *arg, int argc, char **argv, struct sbuf *out)
{
    struct chat_room *r = arg;
    if (argc < 3) {
        sb_adds(out, "usage: chat say MESSAGE\n");
        return 400;
    }
    struct sbuf line = {0};
    sb_adds(&line, "* operator notice:");
    for (int i = 2; i < argc; i++) {
        sb_adds(&line, " ");
        sb_adds(&line, argv[i]);
    }
    sb_adds(&line, "\r\n");
    if (line.failed) {
        sb_free(&line);
        sb_adds(out, "out of memory\n");
        return 500;
    }
    to_all_workers(r, CHAT_LINE, 0, 0, line.p, 0);
    sb_free(&line);
    sb_adds(out, "said to everyone in the room\n");
    return 200;
}

const struct module_command chat_commands[] = {
    {"chat who", MODULE_OPERATOR, "chat who", "who is in the room", cmd_who},
    {"chat say", MODULE_ADMIN, "chat say MESSAGE", "a notice to everyone in the room", cmd_say},
    {NULL, 0, NULL, NULL, NULL},
};
