/*
 * The room's directory, on the supervisor: which nicknames are taken, by
 * whom. It decides joins (first come, first served, case-insensitively) and
 * tells every worker. See chat.h for the message flow.
 */
#include "protocols/chat/chat.h"

#include "core/sbuf.h"

#include "core/bus.h"
#include "core/log.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct room {
    void *nicks; /* tsearch tree of char * */
    size_t count;
};

static int nick_cmp(const void *a, const void *b)
{
    return strcasecmp(a, b);
}

void chat_send_str(int to, enum chat_msg sub, uint64_t a, uint64_t b, const char *s)
{
    char *copy = strdup(s);
    if (!copy) {
        log_error(NULL, "chat: out of memory sending to thread %d", to);
        return;
    }
    struct msg m = {.type = MSG_PROTO,
                    .proto = (uint16_t)protocol_index(&chat_protocol),
                    .sub = (uint16_t)sub,
                    .len = (uint32_t)strlen(s),
                    .a = a,
                    .b = b,
                    .ptr = copy,
                    .free_fn = free};
    bus_send(to, &m);
}

/* `last` (a worker id, or 0) is sent to after everyone else. */
static void to_all_workers(enum chat_msg sub, uint64_t a, uint64_t b, const char *s, int last)
{
    int n = bus_max_worker();
    for (int w = 1; w <= n; w++)
        if (w != last && bus_is_live(w))
            chat_send_str(w, sub, a, b, s);
    if (last)
        chat_send_str(last, sub, a, b, s);
}

void *chat_room_start(void)
{
    return calloc(1, sizeof(struct room));
}

static void free_nick(void *p)
{
    free(p);
}

void chat_room_stop(void *arg)
{
    struct room *r = arg;
    tdestroy(r->nicks, free_nick);
    free(r);
}

struct sync_walk {
    int to;
};

static void sync_one(const void *node, VISIT v, void *arg)
{
    const struct sync_walk *sw = arg;
    if (v == postorder || v == leaf)
        chat_send_str(sw->to, CHAT_ROSTER, 0, 0, *(char *const *)node);
}

void chat_room_message(void *arg, struct msg *m)
{
    struct room *r = arg;
    char *nick = m->ptr;
    switch (m->sub) {
    case CHAT_JOIN: {
        if (tfind(nick, &r->nicks, nick_cmp)) {
            struct msg t = {.type = MSG_PROTO, .proto = m->proto, .sub = CHAT_TAKEN, .a = m->a};
            bus_send(m->from, &t);
            break;
        }
        if (!tsearch(nick, &r->nicks, nick_cmp)) {
            log_error(NULL, "chat: out of memory adding %s", nick);
            struct msg t = {.type = MSG_PROTO, .proto = m->proto, .sub = CHAT_TAKEN, .a = m->a};
            bus_send(m->from, &t);
            break;
        }
        m->ptr = NULL; /* the tree owns it now */
        r->count++;
        /* The joiner's worker hears last: by the time it lets the user
         * speak, every other inbox already holds the JOINED, so no worker
         * hears from (or about) a user before it knows of them. */
        to_all_workers(CHAT_JOINED, m->a, m->from, nick, m->from);
        log_info("chat", "%s joined on worker %u (%zu in the room)", nick, m->from, r->count);
        break;
    }
    case CHAT_LEAVE: {
        void *found = tfind(nick, &r->nicks, nick_cmp);
        if (!found)
            break;
        char *owned = *(char **)found;
        tdelete(nick, &r->nicks, nick_cmp);
        r->count--;
        to_all_workers(CHAT_LEFT, 0, m->from, nick, 0);
        log_info("chat", "%s left (%zu in the room)", nick, r->count);
        free(owned);
        break;
    }
    case CHAT_SYNC: {
        /* A worker started after users joined (live scaling): give it the
         * room. Later JOINED/LEFT come after these, from the same sender. */
        struct sync_walk sw = {m->from};
        twalk_r(r->nicks, sync_one, &sw);
        break;
    }
    default:
        log_error(NULL, "chat: unexpected message %u from thread %u", m->sub, m->from);
    }
    msg_release(m);
}

/* ---- the console's "chat who" and "chat say" ---- */

struct who {
    struct sbuf *out;
    int count;
};

static void who_one(const void *node, VISIT v, void *arg)
{
    struct who *w = arg;
    if (v == postorder || v == leaf) {
        sb_addf(w->out, "%s\n", *(char *const *)node);
        w->count++;
    }
}

int chat_room_admin(void *arg, int argc, char **argv, struct sbuf *out)
{
    struct room *r = arg;
    if (argc == 2 && strcmp(argv[1], "who") == 0) {
        struct who w = {out, 0};
        twalk_r(r->nicks, who_one, &w);
        if (!w.count)
            sb_adds(out, "(nobody is in the room)\n");
        return 200;
    }
    if (argc >= 3 && strcmp(argv[1], "say") == 0) {
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
        to_all_workers(CHAT_LINE, 0, 0, line.p, 0);
        sb_free(&line);
        sb_adds(out, "said to everyone in the room\n");
        return 200;
    }
    sb_adds(out, "usage: chat who | chat say MESSAGE\n");
    return 400;
}
