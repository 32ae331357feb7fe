/*
 * Medusa's chat room, shared by every worker.
 *
 * Each worker owns its own users' connections. The room's directory of
 * nicknames (which enforces uniqueness) belongs to the supervisor
 * (chat_room.c); each worker keeps a replica of the nickname list, fed by the
 * supervisor's JOINED/LEFT messages, for greetings and /who. Lines said in
 * the room go straight from the speaker's worker to every other worker.
 *
 *   worker --CHAT_JOIN(conn, nick)--> supervisor
 *   supervisor --CHAT_TAKEN(conn)--> that worker              (nick in use)
 *   supervisor --CHAT_JOINED(event: conn, worker, nick)--> all workers
 *   worker --CHAT_LEAVE(nick)--> supervisor --CHAT_LEFT(event: nick)--> all workers
 *   worker --CHAT_LINE(event: text)--> every other worker
 *   new worker --CHAT_SYNC--> supervisor --CHAT_ROSTER(nick)...--> it
 *
 * The supervisor sends JOINED to the joiner's own worker last, so every
 * other worker has it queued before the user can speak: every worker hears
 * of a user before it hears from them. (Should the supervisor's push to some
 * inbox overflow into its retry FIFO, that worker may hear a line first;
 * it only happens with an inbox 65,536 messages deep.)
 *
 * Moving users (the server scales down). Everything said in the room is an
 * event numbered by its sender: a worker numbers its users' lines, the
 * supervisor its joins, departures and notices. Each worker remembers the
 * last number it delivered from each sender and keeps its last
 * CHAT_HISTORY events. A user who moves carries the leaving worker's
 * numbers; the worker that adopts the user replays what it delivered that
 * the user had not seen, and skips what arrives later that the user had
 * already seen. So a user who moves misses no line and sees none twice,
 * although lines reach the two workers in different orders.
 */
#pragma once

#include "core/module.h"

#include <stddef.h>
#include <stdint.h>

enum chat_msg {
    CHAT_JOIN = 1, /* worker -> supervisor: a = conn id, ptr = nick */
    CHAT_TAKEN,    /* supervisor -> worker: a = conn id */
    CHAT_JOINED,   /* supervisor -> workers: ptr = struct chat_event (conn, worker, nick) */
    CHAT_LEAVE,    /* worker -> supervisor: a = conn id, ptr = nick (only its own frees it) */
    CHAT_LEFT,     /* supervisor -> workers: ptr = struct chat_event (nick) */
    CHAT_LINE,     /* worker or supervisor -> workers: ptr = struct chat_event (the line) */
    CHAT_SYNC,     /* worker -> supervisor: a new worker wants the roster */
    CHAT_ROSTER,   /* supervisor -> that worker: ptr = one nick already in the room */
};

#define CHAT_NICK_MAX 32
#define CHAT_HISTORY 512

/* Something said in the room, numbered by its sender (the bus thread id in
 * msg.from): a line, or a join or departure (text is then the nick). */
struct chat_event {
    uint64_t seq;
    uint64_t conn; /* JOINED: the joiner's connection id */
    int worker;    /* JOINED: the joiner's worker */
    size_t len;
    char text[];
};

struct chat_cfg {
    unsigned max_line;   /* bytes, without the line end */
    unsigned max_output; /* bytes queued for one client before it is dropped */
    unsigned idle_ms;    /* 0: no idle timeout */
    unsigned sndbuf;     /* SO_SNDBUF for clients; 0: the kernel's autotuning */
};

extern const struct module chat_module;

/* Figures any thread may read: room size from the supervisor, the rest
 * per worker (single writer each). */
struct chat_counters {
    _Atomic uint64_t sessions, lines, moved_in;
} __attribute__((aligned(64)));
extern _Atomic uint64_t chat_room_users;

/* Supervisor side (chat_room.c). */
int chat_room_start(struct supervisor *s, const struct config *cfg, void **state, char *err,
                    size_t errlen);
void chat_room_stop(void *arg);
void chat_room_message(void *arg, struct msg *m);
extern const struct module_command chat_commands[];

/* Sends a copy of a NUL-terminated string; the receiver frees it. */
void chat_send_str(int to, enum chat_msg type, uint64_t a, const char *s);
/* Sends an event (seq, conn, worker, text) to one thread. */
void chat_send_event(int to, enum chat_msg type, uint64_t seq, uint64_t conn, int worker,
                     const char *text, size_t len);
