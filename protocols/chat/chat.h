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
 *   supervisor --CHAT_JOINED(conn, worker, nick)--> all workers
 *   worker --CHAT_LEAVE(nick)--> supervisor --CHAT_LEFT(nick)--> all workers
 *   worker --CHAT_LINE(text)--> every other worker
 *   new worker --CHAT_SYNC--> supervisor --CHAT_ROSTER(nick)...--> it
 *
 * The supervisor sends JOINED to the joiner's own worker last, so every
 * other worker has it queued before the user can speak: every worker hears
 * of a user before it hears from them. (Should the supervisor's push to some
 * inbox overflow into its retry FIFO, that worker may hear a line first;
 * it only happens with an inbox 65,536 messages deep.)
 */
#pragma once

#include "protocols/protocol.h"

enum chat_msg {
    CHAT_JOIN = 1,
    CHAT_TAKEN,
    CHAT_JOINED,
    CHAT_LEAVE,
    CHAT_LEFT,
    CHAT_LINE,
    CHAT_SYNC,   /* worker -> supervisor: a new worker wants the roster */
    CHAT_ROSTER, /* supervisor -> that worker: one nick already in the room */
};

#define CHAT_NICK_MAX 32

struct chat_cfg {
    unsigned max_line;   /* bytes, without the line end */
    unsigned max_output; /* bytes queued for one client before it is dropped */
    unsigned idle_ms;    /* 0: no idle timeout */
    unsigned sndbuf;     /* SO_SNDBUF for clients; 0: the kernel's autotuning */
};

extern const struct protocol chat_protocol;

/* Supervisor side (chat_room.c). */
void *chat_room_start(void);
void chat_room_stop(void *room);
void chat_room_message(void *room, struct msg *m);
int chat_room_admin(void *room, int argc, char **argv, struct sbuf *out);

/* Sends a copy of a NUL-terminated string; the receiver frees it. */
void chat_send_str(int to, enum chat_msg sub, uint64_t a, uint64_t b, const char *s);
