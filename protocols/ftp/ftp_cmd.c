/*
 * The FTP command table and every command except the data transfers
 * (ftp_data.c). A command runs on the session's worker, replies with
 * ftp_reply, and never ends the session itself: it sets s->quitting and
 * the reader does the rest (ftp.c).
 *
 * Paths: an argument is resolved lexically against the working folder into
 * a virtual path (ftp_vpath: no "." or "..", ".." at the root stays there,
 * as in a chroot), then opened below the session's root descriptor with
 * the core's confined open, so neither ".." nor a symlink can leave the
 * root. Operations on a name (delete, rename, mkdir) open its parent that
 * way and act on the last component with the *at calls, which do not
 * follow it.
 */
#include "core/config.h"
#include "core/conn.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/throttle.h"
#include "core/worker.h"
#include "protocols/ftp/ftp_impl.h"

#include <crypt.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
    F_LOGIN = 1, /* only after login */
    F_ARG = 2,   /* needs an argument */
    F_XFER = 4,  /* taken while a transfer runs */
    F_REST = 8,  /* a REST before it still holds (RFC 3659: REST goes just
                  * before the transfer; clients set up the channel between) */
};

struct ftp_cmd {
    const char *verb;
    unsigned flags;
    void (*run)(struct ftp_session *s, char *arg);
    const char *usage;
};

/* ---- helpers ---- */

int ftp_resolve(struct ftp_session *s, const char *arg, char *out)
{
    if (ftp_vpath(s->cwd, arg, out, FTP_MAX_PATH) == 0)
        return 0;
    ftp_reply(s, 553, "Path too long.");
    return -1;
}

int ftp_open(struct ftp_session *s, const char *vpath, int flags)
{
    return fs_open_beneath(s->rootfd, vpath + 1, flags | O_CLOEXEC, 0);
}

void ftp_fail(struct ftp_session *s, const char *what, const char *vpath)
{
    int e = errno;
    switch (e) {
    case ENOENT:
        ftp_reply(s, 550, "%s: no such file or folder.", vpath);
        break;
    case ENOTDIR:
        ftp_reply(s, 550, "%s: not a folder.", vpath);
        break;
    case EISDIR:
        ftp_reply(s, 550, "%s: is a folder.", vpath);
        break;
    case EEXIST:
        ftp_reply(s, 550, "%s: already exists.", vpath);
        break;
    case ENOTEMPTY:
        ftp_reply(s, 550, "%s: folder not empty.", vpath);
        break;
    case ENOSPC:
    case EDQUOT:
        ftp_reply(s, 452, "%s: insufficient storage space.", vpath);
        break;
    case ENAMETOOLONG:
        ftp_reply(s, 553, "%s: name too long.", vpath);
        break;
    case EXDEV:
    case ELOOP:
        log_warn(s->c->peer, "ftp: %s %s refused: it leads outside the root", what, vpath);
        ftp_reply(s, 550, "%s: permission denied.", vpath);
        break;
    default:
        ftp_reply(s, 550, "%s: %s.", vpath, strerror(e));
        break;
    }
}

int ftp_open_parent(struct ftp_session *s, const char *vpath, const char **base)
{
    const char *slash = strrchr(vpath, '/');
    if (!slash[1]) {
        errno = EPERM;
        return -1;
    }
    char parent[FTP_MAX_PATH];
    size_t pl = slash == vpath ? 1 : (size_t)(slash - vpath);
    memcpy(parent, vpath, pl);
    parent[pl] = '\0';
    *base = slash + 1;
    return ftp_open(s, parent, O_PATH | O_DIRECTORY);
}

static int in_upload_dir(const struct ftp_session *s, const char *vpath)
{
    const char *up = s->cfg->anon_upload;
    size_t ul = up ? strlen(up) : 0;
    return up && strncmp(vpath, up, ul) == 0 && (vpath[ul] == '\0' || vpath[ul] == '/');
}

int ftp_may_read(struct ftp_session *s, const char *vpath)
{
    if (!(s->perms & USER_READ) || (s->anonymous && in_upload_dir(s, vpath))) {
        ftp_reply(s, 550, "%s: permission denied.", vpath);
        return 0;
    }
    return 1;
}

static int may(struct ftp_session *s, unsigned perm, const char *vpath)
{
    if (!(s->perms & perm)) {
        log_info(s->c->peer, "ftp: %s may not change %s", s->user, vpath);
        ftp_reply(s, 550, "%s: permission denied.", vpath);
        return 0;
    }
    return 1;
}

static int stat_path(struct ftp_session *s, const char *vpath, struct stat *st)
{
    int fd = ftp_open(s, vpath, O_PATH);
    if (fd < 0)
        return -1;
    int rc = fstat(fd, st);
    close(fd);
    return rc;
}

/* ---- login ---- */

/* ---- RFC 4217: TLS ---- */

static void cmd_auth(struct ftp_session *s, char *arg)
{
    if (!s->c->svc->tls) {
        ftp_reply(s, 502, "TLS is not configured on this server.");
        return;
    }
    if (s->c->ssl) {
        ftp_reply(s, 503, "Already in TLS.");
        return;
    }
    if (strcasecmp(arg, "TLS") != 0 && strcasecmp(arg, "TLS-C") != 0 &&
        strcasecmp(arg, "SSL") != 0) {
        ftp_reply(s, 504, "AUTH TLS is the only mechanism.");
        return;
    }
    if (s->state == FTP_LOGGED) { /* a session's credentials went in clear already */
        ftp_reply(s, 503, "AUTH TLS comes before the login.");
        return;
    }
    ftp_reply(s, 234, "Proceed with negotiation.");
    s->starttls = 1; /* process_input turns the connection once this returns */
    s->state = FTP_USER;
}

static void cmd_pbsz(struct ftp_session *s, char *arg)
{
    if (!s->c->ssl) {
        ftp_reply(s, 503, "PBSZ needs AUTH TLS first.");
        return;
    }
    s->pbsz = 1;
    /* RFC 4217: a TLS stream has no buffer size; anything else is answered 0 */
    ftp_reply(s, 200, "PBSZ=0");
    (void)arg;
}

static void cmd_prot(struct ftp_session *s, char *arg)
{
    if (!s->c->ssl || !s->pbsz) {
        ftp_reply(s, 503, "PROT needs AUTH TLS and PBSZ first.");
        return;
    }
    if (strcasecmp(arg, "P") == 0) {
        s->prot_private = 1;
        ftp_reply(s, 200, "Protection level set to Private.");
    } else if (strcasecmp(arg, "C") == 0) {
        if (s->cfg->tls_required) {
            ftp_reply(s, 534, "Data connections must be protected (PROT P) on this server.");
            return;
        }
        s->prot_private = 0;
        ftp_reply(s, 200, "Protection level set to Clear.");
    } else if (strcasecmp(arg, "S") == 0 || strcasecmp(arg, "E") == 0) {
        ftp_reply(s, 536, "Only PROT C and PROT P are supported.");
    } else {
        ftp_reply(s, 504, "PROT takes C or P.");
    }
}

static void cmd_ccc(struct ftp_session *s, char *arg)
{
    (void)arg;
    /* Turning the control connection back to clear text lets anyone on the
     * path forge commands: refused, as vsftpd does. */
    ftp_reply(s, s->c->ssl ? 534 : 533, "CCC is not allowed: the control connection stays in TLS.");
}

static int tls_refused(struct ftp_session *s)
{
    if (!s->cfg->tls_required || s->c->ssl)
        return 0;
    ftp_reply(s, 530, "This server requires TLS (AUTH TLS) before the login.");
    log_info(s->c->peer, "ftp: login without TLS refused (tls_required)");
    return 1;
}

static void cmd_user(struct ftp_session *s, char *arg)
{
    if (s->state == FTP_LOGGED) {
        ftp_reply(s, 530, "Already logged in: cannot change to another user.");
        return;
    }
    if (tls_refused(s))
        return;
    free(s->user);
    if ((s->user = strndup(arg, 64)))
        ftp_clean(s->user, strlen(s->user)); /* it is shown in STAT and the console */
    s->state = FTP_PASS;
    ftp_reply(s, 331, "Please specify the password.");
}

static void cmd_pass(struct ftp_session *s, char *arg)
{
    if (s->state == FTP_LOGGED) {
        ftp_reply(s, 230, "Already logged in.");
        return;
    }
    if (tls_refused(s))
        return;
    if (s->state != FTP_PASS || !s->user) {
        ftp_reply(s, 503, "Login with USER first.");
        return;
    }
    const struct ftp_cfg *f = s->cfg;
    const char *home = NULL;
    s->state = FTP_USER;
    char host[64];
    conn_peer_host(s->c, host, sizeof host);
    int blocked;
    unsigned wait = throttle_check(host, &blocked);
    if (wait) { /* not checked: too many failures from there */
        explicit_bzero(arg, strlen(arg));
        ftp_count(s, FTP_LOGIN_FAILURES, 1);
        if (blocked) {
            ftp_reply(s, 421, "Too many failed logins from your address; try again in %u s.", wait);
            s->quitting = 1;
        } else {
            ftp_reply(s, 530, "Login refused: too many failed logins; wait %u s.", wait);
        }
        return;
    }
    if (f->anonymous &&
        (strcasecmp(s->user, "anonymous") == 0 || strcasecmp(s->user, "ftp") == 0)) {
        s->anonymous = 1;
        s->perms = USER_READ;
        home = f->root;
    } else if (f->have_users) {
        if (!s->fw->cd && !(s->fw->cd = calloc(1, sizeof *s->fw->cd))) {
            ftp_reply(s, 421, "Out of memory.");
            s->quitting = 1;
            return;
        }
        s->account = users_verify(&f->users, s->user, arg, s->fw->cd);
        if (s->account) {
            s->perms = s->account->perms;
            home = s->account->home ? s->account->home : f->root;
        }
    }
    explicit_bzero(arg, strlen(arg));
    if (!home) {
        log_info(s->c->peer, "ftp: login failed for user '%s'", s->user);
        throttle_failed(host);
        ftp_login_failed(s);
        return;
    }
    s->rootfd = open(home, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->rootfd < 0) {
        log_error(s->c->peer, "ftp: home %s of '%s': %s", home, s->user, strerror(errno));
        s->account = NULL;
        s->anonymous = 0;
        ftp_reply(s, 530, "Login incorrect: the home folder cannot be opened.");
        return;
    }
    s->state = FTP_LOGGED;
    s->login_time = time(NULL);
    ftp_count(s, FTP_LOGINS, 1);
    log_info(s->c->peer, "ftp: %s logged in%s", s->user, s->anonymous ? " (anonymous)" : "");
    ftp_reply(s, 230, "Login successful.");
}

static void cmd_acct(struct ftp_session *s, char *arg)
{
    (void)arg;
    ftp_reply(s, 202, "ACCT not needed.");
}

static void cmd_rein(struct ftp_session *s, char *arg)
{
    (void)arg;
    ftp_data_close(s, "REIN");
    if (s->state == FTP_LOGGED)
        log_info(s->c->peer, "ftp: %s logged out (REIN)", s->user);
    free(s->user);
    free(s->rnfr);
    s->user = s->rnfr = NULL;
    s->account = NULL;
    s->anonymous = 0;
    s->perms = 0;
    if (s->rootfd >= 0)
        close(s->rootfd);
    s->rootfd = -1;
    s->cwd[0] = '/', s->cwd[1] = '\0';
    s->rest = 0;
    s->type_ascii = 1;
    s->epsv_all = 0;
    s->state = FTP_USER;
    ftp_reply(s, 220, "Ready for a new user.");
}

static void cmd_quit(struct ftp_session *s, char *arg)
{
    (void)arg;
    if (s->data && s->data->kind != X_NONE) {
        s->quit_pending = 1; /* RFC 959: the transfer's reply first */
        return;
    }
    ftp_reply(s, 221, "Goodbye.");
    s->quitting = 1;
}

/* ---- information ---- */

static void cmd_noop(struct ftp_session *s, char *arg)
{
    (void)arg;
    ftp_reply(s, 200, "NOOP ok.");
}

static void cmd_syst(struct ftp_session *s, char *arg)
{
    (void)arg;
    ftp_reply(s, 215, "UNIX Type: L8");
}

static void cmd_feat(struct ftp_session *s, char *arg)
{
    (void)arg;
    static const char tls[] = "211-Features:\r\n"
                              " AUTH TLS\r\n"
                              " PBSZ\r\n"
                              " PROT\r\n";
    static const char feat[] = "211-Features:\r\n"
                               " EPRT\r\n"
                               " EPSV\r\n"
                               " MDTM\r\n"
                               " MLST type*;size*;modify*;perm*;unique*;\r\n"
                               " PASV\r\n"
                               " REST STREAM\r\n"
                               " SIZE\r\n"
                               " TVFS\r\n"
                               " UTF8\r\n"
                               "211 End\r\n";
    if (s->c->svc->tls) {
        ftp_send(s, tls, sizeof tls - 1);
        ftp_send(s, feat + 15, sizeof feat - 16); /* after the first line */
        return;
    }
    ftp_send(s, feat, sizeof feat - 1);
}

static void cmd_opts(struct ftp_session *s, char *arg)
{
    if (strncasecmp(arg, "UTF8", 4) == 0 && (!arg[4] || strcasecmp(arg + 4, " ON") == 0)) {
        ftp_reply(s, 200, "Always in UTF8 mode.");
        return;
    }
    if (strncasecmp(arg, "MLST", 4) == 0 && (!arg[4] || arg[4] == ' ')) {
        static const char *const names[] = {"type", "size", "modify", "perm", "unique"};
        unsigned mask = 0;
        char *list = arg[4] ? arg + 5 : arg + 4, *save = NULL;
        for (char *t = strtok_r(list, ";", &save); t; t = strtok_r(NULL, ";", &save))
            for (unsigned i = 0; i < 5; i++)
                if (strcasecmp(t, names[i]) == 0)
                    mask |= 1u << i;
        s->mlst_facts = (unsigned char)mask;
        char text[64] = "";
        for (unsigned i = 0; i < 5; i++)
            if (mask & (1u << i))
                strcat(strcat(text, names[i]), ";");
        ftp_reply(s, 200, "MLST OPTS %s", text);
        return;
    }
    ftp_reply(s, 501, "Option not understood.");
}

static const struct ftp_cmd commands[];

static void cmd_help(struct ftp_session *s, char *arg)
{
    if (arg[0]) {
        for (const struct ftp_cmd *c = commands; c->verb; c++)
            if (strcasecmp(c->verb, arg) == 0) {
                ftp_reply(s, 214, "Syntax: %s", c->usage);
                return;
            }
        ftp_reply(s, 502, "Unknown command %.8s.", arg);
        return;
    }
    char text[1024];
    size_t n = (size_t)snprintf(text, sizeof text, "214-The following commands are recognized.");
    int i = 0;
    for (const struct ftp_cmd *c = commands; c->verb; c++, i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s %-4s", i % 12 ? "" : "\r\n", c->verb);
    n += (size_t)snprintf(text + n, sizeof text - n, "\r\n214 Help OK.\r\n");
    ftp_send(s, text, n < sizeof text ? n : sizeof text - 1);
}

static void list_to_control(struct ftp_session *s, const char *arg);

static void cmd_stat(struct ftp_session *s, char *arg)
{
    if (arg[0]) {
        list_to_control(s, arg);
        return;
    }
    char text[FTP_MAX_PATH + 512], xfer[256] = "";
    if (s->data)
        ftp_data_describe(s, xfer, sizeof xfer);
    int n = snprintf(text, sizeof text,
                     "211-FTP server status:\r\n"
                     " Connected from %s\r\n"
                     " %s%s\r\n"
                     " TYPE: %s, STRUcture: File, MODE: Stream\r\n"
                     " Data connection: %s\r\n"
                     "211 End of status\r\n",
                     s->c->peer, s->state == FTP_LOGGED ? "Logged in as " : "Not logged in",
                     s->state == FTP_LOGGED ? s->user : "", s->type_ascii ? "ASCII" : "BINARY",
                     s->data ? xfer + (xfer[0] == ',') : "none");
    ftp_send(s, text, n > 0 && (size_t)n < sizeof text ? (size_t)n : 0);
}

/* STAT path: a LIST over the control connection (213). */
static void list_to_control(struct ftp_session *s, const char *arg)
{
    char vpath[FTP_MAX_PATH];
    while (arg[0] == '-') { /* ls options some clients send */
        arg += strcspn(arg, " ");
        arg += strspn(arg, " ");
    }
    if (ftp_resolve(s, arg, vpath) < 0 || !ftp_may_read(s, vpath))
        return;
    int fd = ftp_open(s, vpath, O_RDONLY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        ftp_fail(s, "STAT", vpath);
        return;
    }
    char head[FTP_MAX_PATH + 64], line[FTP_MAX_PATH + 128];
    int hn = snprintf(head, sizeof head, "213-Status of %s:\r\n", vpath);
    ftp_clean(head, hn > 2 && (size_t)hn < sizeof head ? (size_t)hn - 2 : 0);
    ftp_send(s, head, (size_t)hn < sizeof head ? (size_t)hn : 0);
    time_t now = time(NULL);
    if (!S_ISDIR(st.st_mode)) {
        const char *slash = strrchr(vpath, '/');
        size_t n = ftp_list_line(line, sizeof line, slash[1] ? slash + 1 : "/", &st, NULL, now);
        ftp_send(s, line, n);
        close(fd);
    } else {
        DIR *d = fdopendir(fd);
        struct dirent *e;
        unsigned count = 0;
        while (d && (e = readdir(d)) && count++ < 10000) {
            struct stat es;
            if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &es, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            char link[FTP_MAX_PATH];
            ssize_t ll =
                S_ISLNK(es.st_mode) ? readlinkat(dirfd(d), e->d_name, link, sizeof link - 1) : -1;
            if (ll >= 0)
                link[ll] = '\0';
            size_t n = ftp_list_line(line, sizeof line, e->d_name, &es, ll >= 0 ? link : NULL, now);
            ftp_send(s, line, n);
        }
        if (d)
            closedir(d);
        else
            close(fd);
    }
    ftp_reply(s, 213, "End of status.");
}

/* ---- settings ---- */

static void cmd_type(struct ftp_session *s, char *arg)
{
    if (strcasecmp(arg, "A") == 0 || strcasecmp(arg, "A N") == 0) {
        s->type_ascii = 1;
        ftp_reply(s, 200, "Switching to ASCII mode.");
    } else if (strcasecmp(arg, "I") == 0 || strcasecmp(arg, "L 8") == 0) {
        s->type_ascii = 0;
        ftp_reply(s, 200, "Switching to Binary mode.");
    } else {
        ftp_reply(s, 504, "Type %.16s not supported.", arg);
    }
}

static void cmd_stru(struct ftp_session *s, char *arg)
{
    if (strcasecmp(arg, "F") == 0)
        ftp_reply(s, 200, "Structure set to File.");
    else
        ftp_reply(s, 504, "Only File structure is supported.");
}

static void cmd_mode(struct ftp_session *s, char *arg)
{
    if (strcasecmp(arg, "S") == 0)
        ftp_reply(s, 200, "Mode set to Stream.");
    else
        ftp_reply(s, 504, "Only Stream mode is supported.");
}

static void cmd_rest(struct ftp_session *s, char *arg)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (*end || end == arg || v < 0 || errno || arg[0] == '-' || arg[0] == '+') {
        ftp_reply(s, 501, "REST needs a byte offset.");
        return;
    }
    s->rest = (off_t)v;
    ftp_reply(s, 350, "Restarting at %lld. Send STORE or RETRIEVE.", v);
}

static void cmd_allo(struct ftp_session *s, char *arg)
{
    (void)arg;
    ftp_reply(s, 202, "ALLO command ignored.");
}

/* ---- folders ---- */

static void cmd_pwd(struct ftp_session *s, char *arg)
{
    (void)arg;
    char q[FTP_MAX_PATH * 2];
    ftp_quote(q, sizeof q, s->cwd);
    ftp_reply(s, 257, "\"%s\" is the current directory.", q);
}

static void cmd_cwd(struct ftp_session *s, char *arg)
{
    char vpath[FTP_MAX_PATH];
    if (ftp_resolve(s, arg, vpath) < 0)
        return;
    int fd = ftp_open(s, vpath, O_PATH | O_DIRECTORY);
    if (fd < 0) {
        ftp_fail(s, "CWD", vpath);
        return;
    }
    close(fd);
    char *cwd = strdup(vpath);
    if (!cwd) {
        ftp_reply(s, 451, "Out of memory.");
        return;
    }
    free(s->cwd);
    s->cwd = cwd;
    ftp_reply(s, 250, "Directory successfully changed.");
}

static void cmd_cdup(struct ftp_session *s, char *arg)
{
    (void)arg;
    char up[] = "..";
    cmd_cwd(s, up);
}

static void cmd_mkd(struct ftp_session *s, char *arg)
{
    char vpath[FTP_MAX_PATH];
    const char *base;
    if (ftp_resolve(s, arg, vpath) < 0 || !may(s, USER_MKDIR, vpath))
        return;
    int dfd = ftp_open_parent(s, vpath, &base);
    if (dfd < 0 || mkdirat(dfd, base, 0755) < 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        errno = e;
        ftp_fail(s, "MKD", vpath);
        return;
    }
    close(dfd);
    char q[FTP_MAX_PATH * 2];
    ftp_quote(q, sizeof q, vpath);
    log_info(s->c->peer, "ftp: %s MKD %s", s->user, vpath);
    ftp_reply(s, 257, "\"%s\" created.", q);
}

static void remove_name(struct ftp_session *s, char *arg, int flags, const char *verb)
{
    char vpath[FTP_MAX_PATH];
    const char *base;
    if (ftp_resolve(s, arg, vpath) < 0 || !may(s, USER_DELETE, vpath))
        return;
    int dfd = ftp_open_parent(s, vpath, &base);
    if (dfd < 0 || unlinkat(dfd, base, flags) < 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        errno = e == EPERM && !flags ? EISDIR : e;
        ftp_fail(s, verb, vpath);
        return;
    }
    close(dfd);
    log_info(s->c->peer, "ftp: %s %s %s", s->user, verb, vpath);
    ftp_reply(s, 250, flags ? "Directory removed." : "File deleted.");
}

static void cmd_dele(struct ftp_session *s, char *arg)
{
    remove_name(s, arg, 0, "DELE");
}

static void cmd_rmd(struct ftp_session *s, char *arg)
{
    remove_name(s, arg, AT_REMOVEDIR, "RMD");
}

static void cmd_rnfr(struct ftp_session *s, char *arg)
{
    char vpath[FTP_MAX_PATH];
    const char *base;
    if (ftp_resolve(s, arg, vpath) < 0 || !may(s, USER_RENAME, vpath))
        return;
    struct stat st;
    int dfd = ftp_open_parent(s, vpath, &base);
    if (dfd < 0 || fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        errno = e;
        ftp_fail(s, "RNFR", vpath);
        return;
    }
    close(dfd);
    free(s->rnfr);
    s->rnfr = strdup(vpath);
    ftp_reply(s, 350, "Ready for RNTO.");
}

static void cmd_rnto(struct ftp_session *s, char *arg)
{
    char *from = s->rnfr, to[FTP_MAX_PATH];
    s->rnfr = NULL;
    if (!from) {
        ftp_reply(s, 503, "RNFR required first.");
        return;
    }
    const char *fbase, *tbase;
    int fd1 = -1, fd2 = -1;
    if (ftp_resolve(s, arg, to) < 0 || !may(s, USER_RENAME, to)) {
        free(from);
        return;
    }
    if ((fd1 = ftp_open_parent(s, from, &fbase)) < 0 ||
        (fd2 = ftp_open_parent(s, to, &tbase)) < 0 || renameat(fd1, fbase, fd2, tbase) < 0) {
        ftp_fail(s, "RNTO", fd1 < 0 ? from : to);
    } else {
        log_info(s->c->peer, "ftp: %s renamed %s to %s", s->user, from, to);
        ftp_reply(s, 250, "Rename successful.");
    }
    if (fd1 >= 0)
        close(fd1);
    if (fd2 >= 0)
        close(fd2);
    free(from);
}

/* ---- file facts ---- */

static void cmd_size(struct ftp_session *s, char *arg)
{
    char vpath[FTP_MAX_PATH];
    struct stat st;
    if (ftp_resolve(s, arg, vpath) < 0 || !ftp_may_read(s, vpath))
        return;
    if (stat_path(s, vpath, &st) < 0) {
        ftp_fail(s, "SIZE", vpath);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        ftp_reply(s, 550, "%s: not a plain file.", vpath);
        return;
    }
    /* The file's size in either TYPE, as vsftpd and most servers answer:
     * counting what ASCII would send means reading the whole file. */
    ftp_reply(s, 213, "%lld", (long long)st.st_size);
}

static void cmd_mdtm(struct ftp_session *s, char *arg)
{
    char vpath[FTP_MAX_PATH];
    struct stat st;
    if (ftp_resolve(s, arg, vpath) < 0 || !ftp_may_read(s, vpath))
        return;
    if (stat_path(s, vpath, &st) < 0) {
        ftp_fail(s, "MDTM", vpath);
        return;
    }
    struct tm tm;
    gmtime_r(&st.st_mtime, &tm);
    ftp_reply(s, 213, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
              tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void cmd_mlst(struct ftp_session *s, char *arg)
{
    char vpath[FTP_MAX_PATH];
    struct stat st;
    if (ftp_resolve(s, arg, vpath) < 0 || !ftp_may_read(s, vpath))
        return;
    if (stat_path(s, vpath, &st) < 0) {
        ftp_fail(s, "MLST", vpath);
        return;
    }
    char facts[256], text[2 * FTP_MAX_PATH + 512];
    ftp_facts(facts, sizeof facts, &st, s->perms, s->mlst_facts);
    ftp_clean(vpath, strlen(vpath));
    int n = snprintf(text, sizeof text, "250-Listing %s\r\n %s %s\r\n250 End.\r\n", vpath, facts,
                     vpath);
    ftp_send(s, text, n > 0 && (size_t)n < sizeof text ? (size_t)n : 0);
}

static void cmd_site(struct ftp_session *s, char *arg)
{
    if (strcasecmp(arg, "HELP") == 0) {
        ftp_reply(s, 214, "SITE commands: CHMOD HELP");
        return;
    }
    if (strncasecmp(arg, "CHMOD ", 6) != 0) {
        ftp_reply(s, 500, "Unknown SITE command.");
        return;
    }
    char *p = arg + 6, *end;
    long mode = strtol(p, &end, 8);
    /* No setuid, setgid or sticky bit from a client. */
    if (end == p || *end != ' ' || mode < 0 || mode > 0777) {
        ftp_reply(s, 501, "SITE CHMOD needs an octal mode up to 777 and a path.");
        return;
    }
    char vpath[FTP_MAX_PATH];
    if (ftp_resolve(s, end + 1, vpath) < 0 || !may(s, USER_WRITE, vpath))
        return;
    int fd = ftp_open(s, vpath, O_PATH);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (fd < 0 || chmod(proc, (mode_t)mode) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        ftp_fail(s, "SITE CHMOD", vpath);
        return;
    }
    close(fd);
    log_info(s->c->peer, "ftp: %s SITE CHMOD %lo %s", s->user, mode, vpath);
    ftp_reply(s, 200, "SITE CHMOD command ok.");
}

/* ---- transfers (ftp_data.c) ---- */

static void cmd_port(struct ftp_session *s, char *arg)
{
    ftp_cmd_port(s, arg, 0);
}
static void cmd_eprt(struct ftp_session *s, char *arg)
{
    ftp_cmd_port(s, arg, 1);
}
static void cmd_pasv(struct ftp_session *s, char *arg)
{
    ftp_cmd_pasv(s, arg, 0);
}
static void cmd_epsv(struct ftp_session *s, char *arg)
{
    ftp_cmd_pasv(s, arg, 1);
}
static void cmd_retr(struct ftp_session *s, char *arg)
{
    ftp_cmd_retr(s, arg);
}
static void cmd_stor(struct ftp_session *s, char *arg)
{
    ftp_cmd_stor(s, arg, 0);
}
static void cmd_appe(struct ftp_session *s, char *arg)
{
    ftp_cmd_stor(s, arg, 1);
}
static void cmd_stou(struct ftp_session *s, char *arg)
{
    ftp_cmd_stor(s, arg, 2);
}
static void cmd_list(struct ftp_session *s, char *arg)
{
    ftp_cmd_list(s, arg, L_LIST);
}
static void cmd_nlst(struct ftp_session *s, char *arg)
{
    ftp_cmd_list(s, arg, L_NLST);
}
static void cmd_mlsd(struct ftp_session *s, char *arg)
{
    ftp_cmd_list(s, arg, L_MLSD);
}
static void cmd_abor(struct ftp_session *s, char *arg)
{
    (void)arg;
    ftp_cmd_abor(s);
}

/* In alphabetical order, for HELP. */
static const struct ftp_cmd commands[] = {
    {"ABOR", F_LOGIN | F_XFER, cmd_abor, "ABOR"},
    {"ACCT", F_LOGIN, cmd_acct, "ACCT <account>"},
    {"ALLO", F_LOGIN, cmd_allo, "ALLO <bytes>"},
    {"APPE", F_LOGIN | F_ARG | F_REST, cmd_appe, "APPE <file>"},
    {"AUTH", F_ARG, cmd_auth, "AUTH TLS"},
    {"CCC", 0, cmd_ccc, "CCC"},
    {"CDUP", F_LOGIN, cmd_cdup, "CDUP"},
    {"CWD", F_LOGIN | F_ARG, cmd_cwd, "CWD <folder>"},
    {"DELE", F_LOGIN | F_ARG, cmd_dele, "DELE <file>"},
    {"EPRT", F_LOGIN | F_ARG | F_REST, cmd_eprt, "EPRT |af|address|port|"},
    {"EPSV", F_LOGIN | F_REST, cmd_epsv, "EPSV [1|2|ALL]"},
    {"FEAT", 0, cmd_feat, "FEAT"},
    {"HELP", 0, cmd_help, "HELP [<command>]"},
    {"LIST", F_LOGIN, cmd_list, "LIST [<path>]"},
    {"MDTM", F_LOGIN | F_ARG, cmd_mdtm, "MDTM <file>"},
    {"MKD", F_LOGIN | F_ARG, cmd_mkd, "MKD <folder>"},
    {"MLSD", F_LOGIN, cmd_mlsd, "MLSD [<folder>]"},
    {"MLST", F_LOGIN, cmd_mlst, "MLST [<path>]"},
    {"MODE", F_LOGIN | F_ARG, cmd_mode, "MODE S"},
    {"NLST", F_LOGIN, cmd_nlst, "NLST [<path>]"},
    {"NOOP", F_LOGIN | F_XFER, cmd_noop, "NOOP"},
    {"OPTS", F_LOGIN | F_ARG, cmd_opts, "OPTS UTF8 ON | OPTS MLST <facts>"},
    {"PASS", 0, cmd_pass, "PASS <password>"},
    {"PASV", F_LOGIN | F_REST, cmd_pasv, "PASV"},
    {"PBSZ", F_ARG, cmd_pbsz, "PBSZ 0"},
    {"PORT", F_LOGIN | F_ARG | F_REST, cmd_port, "PORT h1,h2,h3,h4,p1,p2"},
    {"PROT", F_ARG, cmd_prot, "PROT C | PROT P"},
    {"PWD", F_LOGIN, cmd_pwd, "PWD"},
    {"QUIT", F_XFER, cmd_quit, "QUIT"},
    {"REIN", F_LOGIN, cmd_rein, "REIN"},
    {"REST", F_LOGIN | F_ARG | F_REST, cmd_rest, "REST <offset>"},
    {"RETR", F_LOGIN | F_ARG | F_REST, cmd_retr, "RETR <file>"},
    {"RMD", F_LOGIN | F_ARG, cmd_rmd, "RMD <folder>"},
    {"RNFR", F_LOGIN | F_ARG, cmd_rnfr, "RNFR <path>"},
    {"RNTO", F_LOGIN | F_ARG, cmd_rnto, "RNTO <path>"},
    {"SITE", F_LOGIN | F_ARG, cmd_site, "SITE HELP | SITE CHMOD <mode> <path>"},
    {"SIZE", F_LOGIN | F_ARG, cmd_size, "SIZE <file>"},
    {"STAT", F_LOGIN | F_XFER, cmd_stat, "STAT [<path>]"},
    {"STOR", F_LOGIN | F_ARG | F_REST, cmd_stor, "STOR <file>"},
    {"STOU", F_LOGIN, cmd_stou, "STOU [<name>]"},
    {"STRU", F_LOGIN | F_ARG, cmd_stru, "STRU F"},
    {"SYST", F_LOGIN, cmd_syst, "SYST"},
    {"TYPE", F_LOGIN | F_ARG | F_REST, cmd_type, "TYPE A | TYPE I"},
    {"USER", 0, cmd_user, "USER <name>"},
    {"XCUP", F_LOGIN, cmd_cdup, "XCUP"},
    {"XCWD", F_LOGIN | F_ARG, cmd_cwd, "XCWD <folder>"},
    {"XMKD", F_LOGIN | F_ARG, cmd_mkd, "XMKD <folder>"},
    {"XPWD", F_LOGIN, cmd_pwd, "XPWD"},
    {"XRMD", F_LOGIN | F_ARG, cmd_rmd, "XRMD <folder>"},
    {NULL, 0, NULL, NULL},
};

static const struct ftp_cmd *find(const char *verb)
{
    for (const struct ftp_cmd *c = commands; c->verb; c++)
        if (strcmp(c->verb, verb) == 0)
            return c;
    return NULL;
}

int ftp_command_during_transfer(const char *line, size_t len)
{
    char verb[5];
    size_t v = 0;
    while (v < len && v < 4 && line[v] != ' ') {
        verb[v] = (char)(line[v] >= 'a' && line[v] <= 'z' ? line[v] - 32 : line[v]);
        v++;
    }
    verb[v] = '\0';
    if (v < len && line[v] != ' ')
        return 0;
    const struct ftp_cmd *c = find(verb);
    return c && (c->flags & F_XFER);
}

void ftp_command(struct ftp_session *s, char *line, size_t len)
{
    char verb[5], *arg;
    if (ftp_split(line, len, verb, &arg) < 0) {
        log_info(s->c->peer, "ftp: malformed command line refused");
        conn_count_error(s->c);
        ftp_reply(s, 500, "Syntax error, command unrecognized.");
        return;
    }
    const struct ftp_cmd *c = find(verb);
    log_debug(s->c->peer, "ftp: %s %s", verb, strcmp(verb, "PASS") == 0 ? "****" : arg);
    if (!c) {
        conn_count_error(s->c);
        ftp_reply(s, 500, "Unknown command %s.", verb);
        return;
    }
    if ((c->flags & F_LOGIN) && s->state != FTP_LOGGED) {
        ftp_reply(s, 530, "Please login with USER and PASS.");
        return;
    }
    if ((c->flags & F_ARG) && !arg[0]) {
        ftp_reply(s, 501, "%s needs an argument.", verb);
        return;
    }
    if (s->rest && !(c->flags & F_REST))
        s->rest = 0;
    if (c->run != cmd_rnto && s->rnfr) {
        free(s->rnfr); /* RNFR is good for the next command only */
        s->rnfr = NULL;
    }
    c->run(s, arg);
}
