/*
 * Levelled error log shared by every thread.
 *
 * Each event is one line, written with a single write(2) to a descriptor
 * opened O_APPEND, so lines from different threads never interleave and no
 * lock is needed. The line names the thread (sup, w1, w2 …) and, where there
 * is one, the peer.
 *
 * The descriptor number never changes after log_init(): retargeting and
 * reopening (SIGUSR1, logrotate) open the new file and dup2(2) it onto that
 * number, which is atomic for concurrent writers. log_open() and log_reopen()
 * are for the supervisor thread; the logging calls are for any thread.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

enum log_level { MLOG_ERROR, MLOG_WARN, MLOG_INFO, MLOG_DEBUG };

void log_init(void);
/* "stderr" or a file path. Returns 0, or -1 with errno set. */
int log_open(const char *target);
int log_reopen(void);
/* A module's own log (an access log, a transfer log): opened O_APPEND, so
 * one write(2) per line keeps lines from several workers whole. -1 with
 * errno. */
int log_file_open(const char *path);
/* SIGUSR1 (logrotate): opens path again onto the same descriptor, so
 * workers writing to fd never see it closed. 0, or -1 with errno (fd
 * still writes to the old file). */
int log_file_reopen(const char *path, int fd);
/* Returns the level for "error", "warn", "info", "debug", or -1. */
int log_level_parse(const char *name);
void log_set_level(enum log_level level);
int log_enabled(enum log_level level);
/* Thread tag used in every line: 0 is the supervisor, N is worker N. */
void log_set_thread(int id);
/* Calls emit with each of the last n lines logged (oldest first), up to
 * the ring's size; returns how many. Any thread. */
size_t log_tail(size_t n, void (*emit)(void *arg, const char *line), void *arg);
/* The current level's name. */
const char *log_level_name(void);

void log_msg(enum log_level level, const char *peer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level level, const char *peer, const char *fmt, va_list ap);

#define log_error(peer, ...) log_msg(MLOG_ERROR, peer, __VA_ARGS__)
#define log_warn(peer, ...) log_msg(MLOG_WARN, peer, __VA_ARGS__)
#define log_info(peer, ...)                                                                        \
    do {                                                                                           \
        if (log_enabled(MLOG_INFO))                                                                \
            log_msg(MLOG_INFO, peer, __VA_ARGS__);                                                 \
    } while (0)
#define log_debug(peer, ...)                                                                       \
    do {                                                                                           \
        if (log_enabled(MLOG_DEBUG))                                                               \
            log_msg(MLOG_DEBUG, peer, __VA_ARGS__);                                                \
    } while (0)
