/*
 * FTP: raw control-connection bytes through the real session (protocols/
 * ftp: the command table, login, the virtual filesystem, transfers). Each
 * input is one control connection over loopback TCP from 127.0.0.2, handed
 * to the worker as an accepted connection. The configuration (config_load)
 * has an anonymous read-only root with an upload folder, and a users file:
 * alice (password "secret", every permission, her own home), bob (read
 * only, the common root). Seeds log in both ways.
 *
 * The harness plays the client's data side too: when the server answers
 * PASV (227) or EPSV (229), it connects to the port given, sends a few
 * bytes (an upload's content), half-closes and reads until the server
 * closes, so listings, downloads and uploads really run. (PORT/EPRT make
 * the server connect out, to 127.0.0.2 where nothing listens: refused.)
 * Alice's home and the upload folder are put back as they were after every
 * input.
 */
#include "harness.h"

#include "core/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct worker *w;

static const char conf[] =
    "workers = 1;\n"
    "ftp = ( { name = \"files\"; listen = [ \"127.0.0.1:1\" ]; root = \"ftp\";\n"
    "  anonymous = true; anonymous_upload = \"/incoming\"; users = \"users\";\n"
    "  max_login_failures = 3; login_failure_delay = 0; data_timeout = 5;\n"
    "  banner = \"fuzz\"; } );\n";

static void fixture(void)
{
    fz_mkdir("home");
    fz_mkdir("home/alice");
    fz_mkdir("home/alice/dir");
    fz_write("home/alice/a.txt", "alice's\n");
    fz_write("home/alice/dir/b.txt", "bbb\n");
    fz_symlink("../../outside", "home/alice/out");
    fz_mkdir("ftp/incoming");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_mkdir("ftp");
    fz_mkdir("ftp/pub");
    fz_mkdir("outside");
    fz_write("ftp/README", "read me\n");
    fz_write("ftp/pub/hello.txt", "hello\n");
    fz_write("ftp/pub/with space.txt", "x\n");
    fz_write("outside/secret", "never\n");
    fz_symlink("../outside", "ftp/out");
    fixture();
    fz_write("users", "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=:home/alice:"
                      "read,write,delete,mkdir,rename\n"
                      "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n");
    w = fz_worker(fz_config("medusa.conf", conf));
    return 0;
}

/* ---- the client's data connections ---- */
#define MAX_DATA 8
struct data_side {
    int fd[MAX_DATA];
    int n;
    size_t scanned; /* output already searched for 227/229 */
};

static void data_connect(struct data_side *d, unsigned port)
{
    if (d->n == MAX_DATA || port == 0 || port > 65535)
        return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.2", &src.sin_addr);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    if (fd < 0)
        return;
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS &&
         errno != EINTR)) {
        close(fd);
        return;
    }
    /* an upload's content, then our end: a download does not read it */
    static const char payload[] = "uploaded by the fuzzer\n";
    send(fd, payload, sizeof payload - 1, MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    d->fd[d->n++] = fd;
}

static void on_output(struct fz_client *cl, const char *out, size_t len, void *arg)
{
    (void)cl;
    struct data_side *d = arg;
    /* whole lines only */
    while (d->scanned < len) {
        const char *nl = memchr(out + d->scanned, '\n', len - d->scanned);
        if (!nl)
            break;
        const char *line = out + d->scanned;
        size_t n = (size_t)(nl - line);
        d->scanned += n + 1;
        unsigned h[6], port;
        char buf[256];
        snprintf(buf, sizeof buf, "%.*s", (int)n, line);
        const char *p;
        if (strncmp(buf, "227 ", 4) == 0 && (p = strchr(buf, '(')) &&
            sscanf(p, "(%u,%u,%u,%u,%u,%u)", &h[0], &h[1], &h[2], &h[3], &h[4], &h[5]) == 6)
            data_connect(d, h[4] * 256 + h[5]);
        else if (strncmp(buf, "229 ", 4) == 0 && (p = strstr(buf, "(|||")) &&
                 sscanf(p, "(|||%u|)", &port) == 1)
            data_connect(d, port);
    }
}

static int data_poll(struct fz_client *cl, void *arg)
{
    (void)cl;
    struct data_side *d = arg;
    int moved = 0;
    for (int i = 0; i < d->n; i++) {
        if (d->fd[i] < 0)
            continue;
        char buf[65536];
        ssize_t n;
        while ((n = recv(d->fd[i], buf, sizeof buf, 0)) > 0)
            moved = 1;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            close(d->fd[i]);
            d->fd[i] = -1;
            moved = 1;
        }
    }
    return moved;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct data_side d = {.n = 0};
    fz_session(w, "files", 1, "127.0.0.2", data, size, on_output, data_poll, &d);
    for (int i = 0; i < d.n; i++)
        if (d.fd[i] >= 0)
            close(d.fd[i]);
    /* every input starts from the same files */
    fz_empty("home");
    fz_empty("ftp/incoming");
    fixture();
    return 0;
}
