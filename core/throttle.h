/*
 * Failed-login throttling, shared by every worker: HTTP Basic auth, FTP
 * logins and the console's TCP authentication all report here, per client
 * address, and all ask here before they check a password.
 *
 * The supervisor keeps the one count per address (a bounded table; the
 * oldest address goes when it is full). A worker that sees a failure sends
 * it to the supervisor (MSG_AUTH_FAILED); from the slow_after-th failure in
 * a window on, the supervisor answers every thread with a wait for that
 * address (MSG_AUTH_BLOCK): 1 s, then 2, 4, ... doubling with each failure,
 * and at max_failures a block of `block` seconds. Each thread keeps those
 * waits in a table of its own (thread-local, bounded) and refuses a login
 * from the address until the wait is over, without checking the password:
 * so a guesser gets at most one try per wait, however many connections and
 * workers it spreads its tries over, and another address is not affected.
 * Waits and counts end by time (window, block); `throttle clear` ends them
 * at once. Refusals are logged once per wait and address on each thread;
 * the supervisor logs each new block once.
 *
 * throttle_check/throttle_failed: any thread with a bus inbox (workers,
 * and the supervisor for the console). The rest: the supervisor.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct config;
struct msg;
struct sbuf;

/* 0: the address may try a login now; else the seconds it must wait (at
 * least 1), and *blocked says whether that is the long block. host: the
 * address text (conn_peer_host); Unix-socket peers ("unix:...") are never
 * throttled. */
unsigned throttle_check(const char *host, int *blocked);
/* A login from host failed (a wrong password, an unknown user). */
void throttle_failed(const char *host);

/* ---- supervisor ---- */
/* The settings of a snapshot taking effect (start, reload). */
void throttle_configure(const struct config *cfg);
void throttle_sup_message(struct msg *m); /* MSG_AUTH_FAILED */
/* What a worker created now starts with (its thread installs it with
 * throttle_thread_start): the current waits, or NULL. */
void *throttle_snapshot(void);
void throttle_thread_start(void *snapshot);
void throttle_snapshot_free(void *snapshot);
/* The console: the addresses counted now (text or JSON), and forgetting
 * one address (or every one with host NULL); returns how many. */
void throttle_report(struct sbuf *sb, int json);
size_t throttle_clear(const char *host);

void throttle_sup_end(void);

/* ---- worker ---- */
void throttle_on_block(struct msg *m); /* MSG_AUTH_BLOCK */
/* The thread ends: its table goes. */
void throttle_thread_end(void);
