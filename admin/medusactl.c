/*
 * medusactl: the admin console's client (shared DESIGN.md §3).
 *
 *   medusactl [-s UNIX_SOCKET | -a HOST:PORT -k SECRET_FILE [--tls] [--cacert FILE]]
 *             [COMMAND ...]
 *
 * With a command: sends it, prints the reply body (stdout for 200, stderr
 * otherwise) untouched, so JSON passes through to scripts, and exits 0 only
 * for a 200 reply. Without: an interactive console with line editing,
 * history and command completion (libedit). The secret is read from a file,
 * never taken from the command line.
 *
 * TLS (the console's tls_listen): --cacert FILE verifies the server's
 * certificate against FILE, --tls against the system's authorities; the
 * name in -a (or --servername) must be the certificate's. The HMAC
 * challenge runs inside TLS as it does in clear.
 *
 * Exit status: 0 reply 200; 1 any other reply; 2 usage; 3 cannot connect,
 * authentication failed, or the server went away.
 */
#include <ctype.h>
#include <editline/readline.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef MEDUSA_ADMIN_SOCKET
#define MEDUSA_ADMIN_SOCKET "/run/medusa/admin.sock"
#endif

static const char *where;
static FILE *in, *out;

static void usage(FILE *f)
{
    fprintf(f, "usage: medusactl [-s UNIX_SOCKET | -a HOST:PORT -k SECRET_FILE] [COMMAND ...]\n"
               "  -s, --socket PATH   the console's Unix socket (default $MEDUSA_ADMIN_SOCKET "
               "or " MEDUSA_ADMIN_SOCKET ")\n"
               "  -a, --address H:P   a TCP console; needs -k\n"
               "  -k, --key FILE      file holding the secret (admin or operator)\n"
               "      --tls           the TCP console speaks TLS (verified against the system's "
               "CAs)\n"
               "      --cacert FILE   TLS, verified against the CA certificate(s) in FILE\n"
               "      --servername N  the name the certificate must have (default: HOST of -a)\n"
               "  -h, --help          this help\n"
               "  without a COMMAND: an interactive console ('help' lists commands)\n"
               "exit status: 0 for a 200 reply, 1 for another reply, 2 for wrong usage,\n"
               "3 when it cannot connect or authenticate\n");
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "medusactl: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "medusactl: cannot connect to %s: %s%s\n", path, strerror(errno),
                errno == ENOENT || errno == ECONNREFUSED ? " (is medusad running, with this "
                                                           "admin socket?)"
                : errno == EACCES                        ? " (run as root or the service user)"
                                                         : "");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int connect_tcp(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host) {
        fprintf(stderr, "medusactl: -a takes HOST:PORT\n");
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc) {
        fprintf(stderr, "medusactl: %s: %s\n", hostport, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(stderr, "medusactl: cannot connect to %s: %s\n", hostport, strerror(err));
    return fd;
}

/* ---- TLS: the FILE streams read and write through the SSL ---- */

static ssize_t tls_cookie_read(void *c, char *buf, size_t len)
{
    int n = SSL_read(c, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(c, n);
    return e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !errno) ? 0 : -1;
}

static ssize_t tls_cookie_write(void *c, const char *buf, size_t len)
{
    int n = SSL_write(c, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : -1;
}

static SSL *tls_connect(int fd, const char *hostport, const char *servername, const char *cafile)
{
    char host[256];
    if (servername) {
        snprintf(host, sizeof host, "%s", servername);
    } else {
        const char *colon = strrchr(hostport, ':');
        size_t hl = (size_t)(colon - hostport);
        if (hostport[0] == '[')
            hostport++, hl -= 2;
        snprintf(host, sizeof host, "%.*s", (int)hl, hostport);
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if ((cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL)
                : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        fprintf(stderr, "medusactl: cannot load CA certificates%s%s: %s\n", cafile ? " from " : "",
                cafile ? cafile : "", ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (!(ssl = SSL_new(ctx)) || SSL_set_fd(ssl, fd) != 1)
        goto fail;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1
              : (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1))
        goto fail;
    SSL_CTX_free(ctx); /* the SSL holds it */
    ctx = NULL;
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        fprintf(stderr, "medusactl: TLS with %s failed: %s\n", hostport,
                v != X509_V_OK ? X509_verify_cert_error_string(v)
                               : ERR_reason_error_string(ERR_get_error())
                                   ?: "the server closed (is it a TLS listener?)");
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
fail:
    fprintf(stderr, "medusactl: cannot set up TLS: %s\n", ERR_reason_error_string(ERR_get_error()));
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return NULL;
}

/* One reply frame: returns the status and a malloc'd body, or -1 when the
 * server went away or broke the framing. */
static int read_reply(char **body, size_t *blen)
{
    char head[64];
    if (!fgets(head, sizeof head, in)) {
        fprintf(stderr, "medusactl: %s closed the connection\n", where);
        return -1;
    }
    int status;
    size_t len;
    char nl;
    if (sscanf(head, "%d %zu%c", &status, &len, &nl) != 3 || nl != '\n' || status < 100 ||
        status > 999 || len > (64u << 20)) {
        fprintf(stderr, "medusactl: %s sent a malformed reply: %.40s\n", where, head);
        return -1;
    }
    *body = malloc(len + 1);
    if (!*body || fread(*body, 1, len, in) != len) {
        fprintf(stderr, "medusactl: %s closed the connection mid-reply\n", where);
        free(*body);
        return -1;
    }
    (*body)[len] = '\0';
    *blen = len;
    return status;
}

static int send_line(const char *line)
{
    if (fprintf(out, "%s\n", line) < 0 || fflush(out) != 0) {
        fprintf(stderr, "medusactl: %s closed the connection (%s)\n", where, strerror(errno));
        return -1;
    }
    return 0;
}

static char *read_secret(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(stderr, "medusactl: cannot read secret file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *s = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&s, &cap, '\0', f);
    fclose(f);
    if (n <= 0) {
        fprintf(stderr, "medusactl: secret file %s is empty\n", path);
        free(s);
        return NULL;
    }
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int authenticate(const char *secret)
{
    char *challenge;
    size_t clen;
    int st = read_reply(&challenge, &clen);
    if (st < 0)
        return -1;
    if (st != 401) {
        fprintf(stderr, "medusactl: expected a challenge, got %d: %s", st, challenge);
        free(challenge);
        return -1;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)challenge, clen, mac, &maclen);
    free(challenge);
    char line[8 + 2 * EVP_MAX_MD_SIZE + 1] = "auth ";
    for (unsigned i = 0; i < maclen; i++)
        snprintf(line + 5 + 2 * i, 3, "%02x", mac[i]);
    char *body;
    size_t blen;
    if (send_line(line) < 0 || (st = read_reply(&body, &blen)) < 0)
        return -1;
    if (st != 200) {
        fprintf(stderr, "medusactl: authentication failed at %s (wrong secret?)\n", where);
        free(body);
        return -1;
    }
    free(body);
    return 0;
}

/* 0 for a 200 reply, 1 for another or when the reply cannot be written
 * (stdout a full disk, a closed pipe), -1 when the connection failed. */
static int run(const char *line, int to_stdout_always)
{
    char *body;
    size_t blen;
    int st;
    if (send_line(line) < 0 || (st = read_reply(&body, &blen)) < 0)
        return -1;
    FILE *dst = st == 200 || to_stdout_always ? stdout : stderr;
    if (st != 200 && to_stdout_always)
        fprintf(dst, "[%d] ", st);
    int written = fwrite(body, 1, blen, dst) == blen && fflush(dst) == 0;
    free(body);
    if (!written) {
        fprintf(stderr, "medusactl: cannot write the reply: %s\n", strerror(errno));
        return 1;
    }
    return st == 200 ? 0 : 1;
}

/* Words for Tab completion: the server's own, read from its 'help' (so
 * every module's commands complete), else these. */
static const char *const fallback_words[] = {
    "help", "info",     "workers", "worker", "listeners", "listener", "conns",
    "kill", "stats",    "reload",  "config", "log",       "shutdown", "quit",
    "set",  "drain",    "restart", "enable", "disable",   "level",    "reopen",
    "tail", "graceful", "now",     "json",   NULL};
static char **words;
static size_t nwords;

static void add_word(const char *w, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (w[i] < 'a' || w[i] > 'z')
            return; /* a placeholder (ID, MESSAGE) or a level, not a word to type */
    for (size_t i = 0; i < nwords; i++)
        if (strlen(words[i]) == len && strncmp(words[i], w, len) == 0)
            return;
    char **nw = realloc(words, (nwords + 2) * sizeof *words);
    if (!nw)
        return;
    words = nw;
    if ((words[nwords] = strndup(w, len)))
        words[++nwords] = NULL;
}

/* help lines are "  USAGE(34 columns) LEVEL HELP"; the usage's words. */
static void learn_words(void)
{
    char *body;
    size_t blen;
    int st;
    if (send_line("help") < 0 || (st = read_reply(&body, &blen)) < 0)
        return;
    if (st != 200) {
        free(body);
        return;
    }
    char *save;
    for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "  ", 2) != 0 || strlen(line) < 36)
            continue;
        line[36] = '\0';
        for (char *p = line + 2; *p;) {
            size_t n = strcspn(p, " |[]");
            add_word(p, n);
            p += n + (p[n] != '\0');
        }
    }
    free(body);
}

static char *complete(const char *text, int state)
{
    static size_t i, len;
    const char *const *list = words ? (const char *const *)words : fallback_words;
    if (!state) {
        i = 0;
        len = strlen(text);
    }
    while (list[i]) {
        const char *w = list[i++];
        if (strncmp(w, text, len) == 0)
            return strdup(w);
    }
    return NULL;
}

static int interactive(void)
{
    learn_words();
    rl_completion_entry_function = complete;
    using_history();
    char histfile[4096] = "";
    const char *home = getenv("HOME");
    if (home) {
        snprintf(histfile, sizeof histfile, "%s/.medusactl_history", home);
        read_history(histfile);
    }
    printf("connected to %s; 'help' lists commands, 'quit' or Ctrl-D leaves\n", where);
    int rc = 0;
    for (;;) {
        char *line = readline("medusa> ");
        if (!line) {
            printf("\n");
            run("quit", 1);
            break;
        }
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p) {
            free(line);
            continue;
        }
        add_history(p);
        int quit = strcmp(p, "quit") == 0;
        if (run(p, 1) < 0) {
            rc = 3;
            free(line);
            break;
        }
        free(line);
        if (quit)
            break;
    }
    if (histfile[0])
        write_history(histfile);
    return rc;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a server that went away is an error message, not a death */
    const char *sock = getenv("MEDUSA_ADMIN_SOCKET"), *addr = NULL, *keyfile = NULL, *cafile = NULL,
               *servername = NULL;
    int tls = 0;
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"address", required_argument, NULL, 'a'},
        {"key", required_argument, NULL, 'k'},    {"tls", no_argument, NULL, 'T'},
        {"cacert", required_argument, NULL, 'C'}, {"servername", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "+s:a:k:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            sock = optarg;
            break;
        case 'a':
            addr = optarg;
            break;
        case 'k':
            keyfile = optarg;
            break;
        case 'T':
            tls = 1;
            break;
        case 'C':
            cafile = optarg;
            tls = 1;
            break;
        case 'N':
            servername = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if ((addr && !keyfile) || (keyfile && !addr)) {
        fprintf(stderr, "medusactl: -a and -k go together\n");
        return 2;
    }
    if ((tls || servername) && !addr) {
        fprintf(stderr, "medusactl: --tls, --cacert and --servername are for -a\n");
        return 2;
    }
    char *secret = NULL;
    if (keyfile && !(secret = read_secret(keyfile)))
        return 3;
    if (!sock)
        sock = MEDUSA_ADMIN_SOCKET;
    where = addr ? addr : sock;
    int fd = addr ? connect_tcp(addr) : connect_unix(sock);
    if (fd < 0) {
        free(secret);
        return 3;
    }
    SSL *ssl = NULL;
    if (tls) {
        if (!(ssl = tls_connect(fd, addr, servername, cafile))) {
            free(secret);
            close(fd);
            return 3;
        }
        in = fopencookie(ssl, "r", (cookie_io_functions_t){.read = tls_cookie_read});
        out = fopencookie(ssl, "w", (cookie_io_functions_t){.write = tls_cookie_write});
    } else {
        in = fdopen(fd, "r");
        out = fdopen(dup(fd), "w");
    }
    if (!in || !out) {
        fprintf(stderr, "medusactl: %s\n", strerror(errno));
        return 3;
    }
    if (secret) {
        int rc = authenticate(secret);
        memset(secret, 0, strlen(secret));
        free(secret);
        if (rc < 0)
            return 3;
    }
    int rc;
    if (optind < argc) {
        size_t len = 0;
        for (int i = optind; i < argc; i++)
            len += strlen(argv[i]) + 1;
        char *line = calloc(1, len + 1);
        if (!line)
            return 3;
        for (int i = optind; i < argc; i++) {
            strcat(line, argv[i]);
            if (i + 1 < argc)
                strcat(line, " ");
        }
        rc = run(line, 0);
        free(line);
        rc = rc < 0 ? 3 : rc;
    } else {
        rc = interactive();
    }
    fclose(in);
    fclose(out);
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
    }
    return rc;
}
