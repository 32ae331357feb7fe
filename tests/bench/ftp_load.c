/*
 * A small FTP load client for tests/bench/ftp_bench.py, in C so that the
 * client is not what limits the figures: blocking sockets, one thread per
 * simulated client, no parsing beyond the reply codes.
 *
 *   ftp_load sessions HOST PORT CLIENTS SECONDS FILE
 *       CLIENTS threads each repeat, until SECONDS have passed: connect,
 *       USER anonymous, PASS, TYPE I, PASV + LIST, PASV + RETR FILE, QUIT.
 *       Prints "sessions N errors E seconds S cpu C" (C: this process's
 *       CPU seconds, to show the client is not the bottleneck).
 *   ftp_load retr HOST PORT FILE            one download, discarded
 *   ftp_load stor HOST PORT LOCAL REMOTE    one upload, with sendfile
 *       Both print "bytes N seconds S".
 * The user is anonymous unless FTP_USER/FTP_PASS are set.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *host, *user, *pass;
static int port;

struct ctl {
    int fd;
    char buf[8192];
    size_t len;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(int p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0}; /* a stalled reply counts as an error */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* The next reply's code (multi-line replies read whole); -1 on EOF. The
 * text of its last line is left in last. */
static int reply(struct ctl *c, char *last, size_t lastlen)
{
    int multi = 0, code = -1;
    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        if (!nl) {
            if (c->len == sizeof c->buf)
                c->len = 0;
            ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (n <= 0)
                return -1;
            c->len += (size_t)n;
            continue;
        }
        size_t ll = (size_t)(nl - c->buf) + 1;
        int is_code =
            ll >= 4 && c->buf[0] >= '0' && c->buf[0] <= '9' && c->buf[1] >= '0' && c->buf[2] >= '0';
        int done = 0;
        if (is_code && !multi) {
            code = atoi(c->buf);
            if (c->buf[3] == '-')
                multi = 1;
            else
                done = 1;
        } else if (is_code && multi && c->buf[3] == ' ' && atoi(c->buf) == code) {
            done = 1;
        }
        if (done && last) {
            size_t n = ll < lastlen ? ll : lastlen - 1;
            memcpy(last, c->buf, n);
            last[n] = '\0';
        }
        memmove(c->buf, c->buf + ll, c->len - ll);
        c->len -= ll;
        if (done)
            return code;
    }
}

static int cmd(struct ctl *c, const char *line, char *last, size_t lastlen)
{
    char b[1024];
    int n = snprintf(b, sizeof b, "%s\r\n", line);
    if (write(c->fd, b, (size_t)n) != n)
        return -1;
    return reply(c, last, lastlen);
}

static int pasv(struct ctl *c)
{
    char last[256];
    if (cmd(c, "PASV", last, sizeof last) != 227)
        return -1;
    char *p = strchr(last, '(');
    unsigned h[6];
    if (!p || sscanf(p, "(%u,%u,%u,%u,%u,%u)", &h[0], &h[1], &h[2], &h[3], &h[4], &h[5]) != 6)
        return -1;
    return dial((int)(h[4] * 256 + h[5]));
}

static long long drain(int fd)
{
    static _Thread_local char buf[1 << 20];
    long long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        total += n;
    return n < 0 ? -1 : total;
}

static int login(struct ctl *c)
{
    c->len = 0;
    if ((c->fd = dial(port)) < 0)
        return -1;
    char line[256];
    snprintf(line, sizeof line, "USER %s", user);
    if (reply(c, NULL, 0) != 220 || cmd(c, line, NULL, 0) != 331)
        return -1;
    snprintf(line, sizeof line, "PASS %s", pass);
    if (cmd(c, line, NULL, 0) != 230 || cmd(c, "TYPE I", NULL, 0) != 200)
        return -1;
    return 0;
}

/* A data command on a fresh passive connection: 0, or -1. */
static int transfer(struct ctl *c, const char *line, long long *bytes)
{
    int d = pasv(c);
    if (d < 0)
        return -1;
    int r = cmd(c, line, NULL, 0);
    if (r != 150 && r != 125) {
        close(d);
        return -1;
    }
    long long n = drain(d);
    close(d);
    if (bytes)
        *bytes = n;
    return n >= 0 && reply(c, NULL, 0) == 226 ? 0 : -1;
}

static const char *file;
static double deadline;
static _Atomic long sessions, errors;

static _Atomic int reported;

static int one_session(void)
{
    struct ctl c;
    char retr[512];
    snprintf(retr, sizeof retr, "RETR %s", file);
    const char *step = "login";
    int ok = login(&c) == 0 && (step = "LIST", transfer(&c, "LIST", NULL) == 0) &&
             (step = "RETR", transfer(&c, retr, NULL) == 0) &&
             (step = "QUIT", cmd(&c, "QUIT", NULL, 0) == 221);
    if (!ok && reported++ < 3)
        fprintf(stderr, "ftp_load: a session failed at %s: %s\n", step,
                errno ? strerror(errno) : "unexpected reply");
    if (c.fd >= 0)
        close(c.fd);
    return ok ? 0 : -1;
}

static void *client(void *arg)
{
    (void)arg;
    while (now() < deadline) {
        if (one_session() == 0)
            sessions++;
        else
            errors++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: see the comment at the top of ftp_load.c\n");
        return 2;
    }
    host = argv[2];
    port = atoi(argv[3]);
    user = getenv("FTP_USER") ? getenv("FTP_USER") : "anonymous";
    pass = getenv("FTP_PASS") ? getenv("FTP_PASS") : "bench@example.com";
    if (strcmp(argv[1], "sessions") == 0 && argc == 7) {
        int n = atoi(argv[4]);
        double secs = atof(argv[5]);
        file = argv[6];
        pthread_t *t = n > 0 ? calloc((size_t)n, sizeof *t) : NULL;
        if (!t) {
            fprintf(stderr, "ftp_load: %d sessions: %s\n", n, n > 0 ? "out of memory" : "too few");
            return 2;
        }
        double t0 = now();
        deadline = t0 + secs;
        for (int i = 0; i < n; i++)
            pthread_create(&t[i], NULL, client, NULL);
        for (int i = 0; i < n; i++)
            pthread_join(t[i], NULL);
        free(t);
        double t1 = now();
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("sessions %ld errors %ld seconds %.3f cpu %.3f\n", (long)sessions, (long)errors,
               t1 - t0,
               (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                   ru.ru_stime.tv_usec / 1e6);
        return 0;
    }
    struct ctl c;
    if (login(&c) < 0) {
        fprintf(stderr, "ftp_load: login failed\n");
        return 1;
    }
    double t0 = now();
    long long bytes = 0;
    if (strcmp(argv[1], "retr") == 0) {
        char line[512];
        snprintf(line, sizeof line, "RETR %s", argv[4]);
        if (transfer(&c, line, &bytes) < 0) {
            fprintf(stderr, "ftp_load: RETR failed\n");
            return 1;
        }
    } else if (strcmp(argv[1], "stor") == 0 && argc == 6) {
        int f = open(argv[4], O_RDONLY);
        struct stat st;
        int d = pasv(&c);
        char line[512];
        snprintf(line, sizeof line, "STOR %s", argv[5]);
        int r = d < 0 ? -1 : cmd(&c, line, NULL, 0);
        if (f < 0 || fstat(f, &st) < 0 || (r != 150 && r != 125)) {
            fprintf(stderr, "ftp_load: STOR failed to start\n");
            return 1;
        }
        off_t off = 0;
        while (off < st.st_size) {
            ssize_t n = sendfile(d, f, &off, (size_t)(st.st_size - off));
            if (n <= 0) {
                fprintf(stderr, "ftp_load: STOR: %s\n", strerror(errno));
                return 1;
            }
        }
        bytes = st.st_size;
        close(d);
        if (reply(&c, NULL, 0) != 226) {
            fprintf(stderr, "ftp_load: STOR not confirmed\n");
            return 1;
        }
    } else {
        return 2;
    }
    printf("bytes %lld seconds %.6f\n", bytes, now() - t0);
    cmd(&c, "QUIT", NULL, 0);
    return 0;
}
