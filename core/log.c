/*
 * The error log. See log.h for the threading model: one descriptor number,
 * retargeted with dup2(2), one write(2) per line.
 */
#include "core/log.h"

#include "core/sbuf.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = STDERR_FILENO;
static _Atomic int log_level = MLOG_INFO;
static char *log_target; /* supervisor only */
static _Thread_local int log_thread;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_init(void)
{
    /* A private copy of stderr, so later retargeting can dup2 over it. */
    int fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd >= 0)
        log_fd = fd;
}

static int open_target(const char *target)
{
    if (strcmp(target, "stderr") == 0)
        return fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    return open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int log_open(const char *target)
{
    int fd = open_target(target);
    if (fd < 0)
        return -1;
    if (fd != log_fd) {
        if (dup2(fd, log_fd) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        close(fd);
    }
    char *copy = strdup(target);
    if (copy) {
        free(log_target);
        log_target = copy;
    }
    return 0;
}

int log_reopen(void)
{
    return log_open(log_target ? log_target : "stderr");
}

int log_file_open(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int log_file_reopen(const char *path, int fd)
{
    int nfd = log_file_open(path);
    if (nfd < 0)
        return -1;
    int rc = dup3(nfd, fd, O_CLOEXEC);
    int e = errno;
    close(nfd);
    errno = e;
    return rc < 0 ? -1 : 0;
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof level_names / sizeof *level_names); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(void)
{
    return level_names[atomic_load_explicit(&log_level, memory_order_relaxed)];
}

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void log_set_thread(int id)
{
    log_thread = id;
}

/* The last LOG_RING lines, for the admin console's 'log tail'. A mutex,
 * not a lock-free ring: lines are rare next to requests, each critical
 * section is one memcpy, and the reader wants a consistent copy. */
#define LOG_RING 256
#define LOG_RING_LINE 512
static char ring[LOG_RING][LOG_RING_LINE];
static unsigned ring_next, ring_count;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;

static void ring_add(const char *line, size_t len)
{
    if (len >= LOG_RING_LINE) /* kept whole in the file; shortened, marked, here */
        len = LOG_RING_LINE - 1;
    pthread_mutex_lock(&ring_lock);
    memcpy(ring[ring_next], line, len);
    ring[ring_next][len] = '\0';
    if (len == LOG_RING_LINE - 1)
        memcpy(ring[ring_next] + len - 3, LIT("..."));
    ring_next = (ring_next + 1) % LOG_RING;
    if (ring_count < LOG_RING)
        ring_count++;
    pthread_mutex_unlock(&ring_lock);
}

size_t log_tail(size_t n, void (*emit)(void *arg, const char *line), void *arg)
{
    pthread_mutex_lock(&ring_lock);
    if (n > ring_count)
        n = ring_count;
    for (size_t i = 0; i < n; i++)
        emit(arg, ring[(ring_next + LOG_RING - n + i) % LOG_RING]);
    pthread_mutex_unlock(&ring_lock);
    return n;
}

static int format_prefix(char *buf, size_t len, enum log_level level, const char *peer)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char who[16];
    if (log_thread == 0)
        snprintf(who, sizeof who, "sup");
    else
        snprintf(who, sizeof who, "w%d", log_thread);
    return snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s%s%s: ", tm.tm_year + 1900,
                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    (int)(tv.tv_usec / 1000), level_names[level], who, peer ? " " : "",
                    peer ? peer : "");
}

/* A line holds no control character: what a client sent (a name, a
 * command, a header) may be in it, and a CR, LF or escape sequence must
 * not forge another line or reach the terminal of whoever reads the log.
 * They become \xHH. Returns a new buffer (with room for the newline) and
 * its length, or NULL when the line is clean (or memory is short, then
 * the controls are replaced in place by '?'). */
static char *escape_controls(char *line, size_t *len)
{
    size_t extra = 0;
    for (size_t i = 0; i < *len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            extra += 3;
    if (!extra)
        return NULL;
    char *out = malloc(*len + extra + 2);
    if (!out) {
        for (size_t i = 0; i < *len; i++)
            if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
                line[i] = '?';
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < *len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x20 || ch == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    *len = o;
    return out;
}

void log_vmsg(enum log_level level, const char *peer, const char *fmt, va_list ap)
{
    if (!log_enabled(level))
        return;
    char stack[1024];
    char *buf = stack;
    int n = format_prefix(stack, sizeof stack, level, peer);
    if (n < 0 || (size_t)n >= sizeof stack)
        n = 0;
    va_list ap2;
    va_copy(ap2, ap);
    int m = vsnprintf(stack + n, sizeof stack - (size_t)n, fmt, ap);
    if (m < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n + (size_t)m + 1 >= sizeof stack) {
        /* A long message gets a heap line rather than being cut short. */
        buf = malloc((size_t)n + (size_t)m + 2);
        if (!buf) {
            va_end(ap2);
            return;
        }
        memcpy(buf, stack, (size_t)n);
        vsnprintf(buf + n, (size_t)m + 1, fmt, ap2);
    }
    va_end(ap2);
    size_t len = (size_t)n + (size_t)m;
    char *esc = escape_controls(buf, &len);
    if (esc) {
        if (buf != stack)
            free(buf);
        buf = esc;
    }
    buf[len++] = '\n';
    /* One write per line; a short write on a file is not retried, so that a
     * half line is never followed by another thread's line mid-way. */
    ssize_t w = write(log_fd, buf, len);
    (void)w;
    ring_add(buf, len - 1);
    if (buf != stack)
        free(buf);
}

void log_msg(enum log_level level, const char *peer, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, peer, fmt, ap);
    va_end(ap);
}
