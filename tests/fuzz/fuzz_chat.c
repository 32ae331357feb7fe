/*
 * Chat: raw client bytes through the real chat session (protocols/chat:
 * the nickname, the line handler, commands, over-long and control-laden
 * lines), on a worker whose room (chat_room.c, the supervisor side) runs
 * on the same thread: the harness pumps the supervisor's inbox into the
 * room, so joins are decided and lines go round within the input. (The
 * room's messages then name worker 1, not the supervisor, as their sender;
 * only sessions that move between workers look at it.)
 *
 * Another user, "observer", joins first on its own connection, so the
 * input's lines are delivered to someone and its joins can be refused
 * (a taken nickname). Both connections end with the input.
 */
#include "harness.h"

#include "core/worker.h"
#include "protocols/chat/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct worker *w;

static const char conf[] = "workers = 1;\n"
                           "chat = ( { name = \"chat\"; listen = [ \"127.0.0.1:1\" ];\n"
                           "  max_line = 200; max_output = 20000; } );\n";

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    struct config *cfg = fz_config("medusa.conf", conf);
    w = fz_worker(cfg);
    fz_sup_start(&chat_module, NULL, cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (worker_accept_fd(w, "chat", sv[1], "127.0.0.1:40001") < 0)
        abort();
    static const char hello[] = "observer\r\n";
    if (send(sv[0], hello, sizeof hello - 1, MSG_NOSIGNAL) != sizeof hello - 1)
        abort();
    /* the observer's join is decided while the input's session runs; its
     * connection is closed with the session's (worker_close_conns) */
    fz_session(w, "chat", 0, NULL, data, size, NULL, NULL, NULL);
    close(sv[0]);
    return 0;
}
