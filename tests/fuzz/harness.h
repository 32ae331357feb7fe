/*
 * What the in-process fuzz targets (tests/fuzz/fuzz_*.c) share: a
 * temporary folder, the real module list, configurations loaded through
 * config_load, a worker served by the fuzzing thread (worker_attach), and
 * a client that sends one input on a real socket and runs the loop until
 * the server goes idle.
 *
 * Idle: the loop is run with EVLOOP_NONBLOCK, pass after pass, until a few
 * passes in a row bring no event, no byte for the client and nothing left
 * unread by the server (timers in the future do not count: a session left
 * waiting on one is closed at the end of the input, as a stop's grace
 * period ends). The supervisor's inbox is pumped on the same thread into
 * the modules' sup_message hooks, so a worker's question to the supervisor
 * (chat joins) is answered within the same input. One thread, no sleeps:
 * an input runs the same way every time.
 */
#pragma once

#include "core/config.h"
#include "core/module.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct supervisor;
struct worker;

/* Once per process: the module list (as medusad's), logging to /dev/null
 * (MEDUSA_FUZZ_LOG=1: to stderr), TLS, and a fresh temporary folder under
 * $TMPDIR, removed at exit. Returns the folder. */
const char *fz_init(void);
/* Files in the temporary folder (rel is relative to it); abort on error. */
void fz_mkdir(const char *rel);
void fz_write(const char *rel, const char *text);
void fz_symlink(const char *target, const char *rel);
/* Removes everything in the folder rel (not rel itself). */
void fz_empty(const char *rel);
/* rel's absolute path, in a static buffer of the given slot (0..3). */
const char *fz_path(int slot, const char *rel);
/* Writes text to rel and loads it with config_load; abort with the error
 * when it does not load (setup must not fail silently). */
struct config *fz_config(const char *rel, const char *text);

/* The worker (id 1) served by this thread, under cfg. */
struct worker *fz_worker(struct config *cfg);
/* A module's supervisor side (sup_init with no supervisor: for modules
 * that do not use it, as the chat room; or a stand-in's), answering the
 * workers' messages to the supervisor. */
void fz_sup_start(const struct module *m, struct supervisor *s, struct config *cfg);
void fz_sup_pump(void);
/* A supervisor-side state made some other way (the console's). */
void fz_sup_set_state(const struct module *m, void *state);
void *fz_sup_state(const struct module *m);
/* Another event loop that fz_run runs beside the client's (the console on
 * the supervisor's loop asks the worker's). */
void fz_also_run(struct event_base *base);

/* ---- a client ---- */
struct fz_client;
/* Called with what the server sent so far (all of it, out[0..len)) each
 * time more came; it may fz_send. */
typedef void fz_output_fn(struct fz_client *cl, const char *out, size_t len, void *arg);
struct fz_client {
    struct event_base *base;
    int fd;
    char *q; /* to send */
    size_t qlen, qoff, qcap;
    char *out; /* received (up to FZ_OUT_MAX, the rest is counted) */
    size_t outlen, outcap, seen;
    fz_output_fn *on_output;
    void *arg;
    /* called after each loop pass (an FTP data channel's own I/O); returns
     * nonzero if it made progress */
    int (*poll)(struct fz_client *cl, void *arg);
};
#define FZ_OUT_MAX (256 * 1024)

void fz_send(struct fz_client *cl, const void *data, size_t len);
/* Runs the loop until idle (see above). */
void fz_run(struct fz_client *cl);
/* One session with the worker's `service`: a socketpair (tcp: a loopback
 * TCP connection from `from`, e.g. "127.0.0.2", or NULL for 127.0.0.1)
 * handed over as an accepted connection; data is sent, the loop runs until
 * idle, the client half-closes, then closes; what is left of the session
 * is closed (worker_close_conns). */
void fz_session(struct worker *w, const char *service, int tcp, const char *from,
                const uint8_t *data, size_t size, fz_output_fn *on_output,
                int (*poll)(struct fz_client *, void *), void *arg);
/* The same with a client already connected to a listener on base. */
void fz_client_session(struct event_base *base, int fd, const uint8_t *data, size_t size,
                       fz_output_fn *on_output, void *arg, void (*after_close)(void *arg));

/* connect(2) that neither blocks for long nor fails on EINTR (libFuzzer's
 * timers); leaves fd non-blocking. 0 or -1. */
int fz_connect(int fd, const struct sockaddr *sa, socklen_t len);
/* A loopback TCP listener of this process (127.0.0.1, a free port). */
int fz_tcp_listener(int *port);
