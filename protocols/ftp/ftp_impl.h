/* The FTP module's internals, shared by its files; see ftp.h. */
#pragma once

#include "core/users.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>

struct conn;
struct crypt_data;
struct ssl_st;
struct event;
struct evbuffer;
struct worker;

#define FTP_MAX_LINE 4096 /* a command line, verb and argument */
#define FTP_MAX_PATH 4096 /* a virtual path */

/* One service block (immutable, part of the snapshot). */
struct ftp_cfg {
    char *name; /* the service's, for logs */
    char *root; /* anonymous root, and home of users without one */
    int anonymous;
    char *anon_upload; /* virtual folder anonymous may upload new files into, or NULL */
    struct users users;
    int have_users;
    unsigned pasv_min, pasv_max; /* 0: the kernel picks each passive port */
    char *pasv_address;          /* advertised in 227 (NAT), or NULL */
    struct in_addr pasv_in;
    int allow_foreign_data; /* PORT/EPRT to another host (FXP) */
    int allow_low_ports;    /* PORT/EPRT to a port below 1024 */
    unsigned max_login_failures;
    unsigned login_delay_ms;
    unsigned max_per_ip; /* sessions per client address; 0: no limit */
    unsigned idle_ms, data_ms;
    char *banner;
    char *xferlog; /* path or NULL */
    int xferlog_fd;
    int tls_required; /* no login, and no data, outside TLS */
    int tls_reuse;    /* a data connection's TLS must resume the session (vsftpd's
                       * require_ssl_reuse): the client that holds it */
};

/* Per worker. */
struct ftp_worker {
    struct worker *w;
    struct crypt_data *cd; /* made at the first password check */
    unsigned next_port;    /* where the next passive port search starts */
};

enum ftp_state { FTP_USER, FTP_PASS, FTP_LOGGED };
enum ftp_xfer { X_NONE, X_RETR, X_STOR, X_LIST };
enum ftp_list_kind { L_LIST, L_NLST, L_MLSD };

/* The data channel: set up by PASV/EPSV/PORT/EPRT, used by one transfer. */
struct ftp_data {
    int lfd;            /* passive: listening socket until the client connects */
    int fd;             /* the data connection, once there */
    struct ssl_st *ssl; /* PROT P: the data connection's TLS */
    int tls_closing;    /* sent all; its close_notify waits for the socket */
    struct event *ev;
    struct sockaddr_storage to; /* active: where to connect */
    socklen_t tolen;
    int active;
    int connecting;

    enum ftp_xfer kind;
    char verb[5];
    char *vpath; /* for replies and the logs */
    int file_fd;
    off_t offset, size;
    int ascii;
    int pending_cr; /* STOR in ASCII: a CR at the end of the last read */
    /* STOR: written to tmp in dirfd, renamed onto name when complete */
    int dirfd;
    char *tmp, *name;
    int noreplace; /* anonymous uploads never overwrite */
    /* LIST/NLST/MLSD */
    void *dir; /* DIR * */
    enum ftp_list_kind list_kind;
    char *list_dir; /* the folder's virtual path, for following symlinks */
    struct evbuffer *buf;
    char *iobuf; /* STOR and ASCII RETR */
    uint64_t bytes;
    struct timeval started;
    int started_xfer; /* the connection is up and bytes flow */
    int list_done;
};

struct ftp_session {
    struct conn *c;
    struct ftp_worker *fw;
    const struct ftp_cfg *cfg;
    enum ftp_state state;
    char *user;                 /* as given to USER */
    const struct user *account; /* NULL for anonymous */
    int anonymous;
    unsigned perms;
    int rootfd;
    char *cwd; /* virtual, starts with '/' */
    char *rnfr;
    off_t rest;
    unsigned char type_ascii, epsv_all, failures, mlst_facts;
    unsigned discarding : 1, moving : 1, stopping : 1, delayed : 1, quitting : 1, quit_pending : 1;
    /* RFC 4217: AUTH TLS answered (starttls: the upgrade is due after this
     * command); PBSZ 0 given; PROT P (data in TLS) */
    unsigned starttls : 1, tls_handshaking : 1, pbsz : 1, prot_private : 1;
    unsigned char in_command; /* a command is running: the reader settles after it */
    int ip_slot;              /* in the per-IP table, or -1 */
    time_t login_time;
    struct ftp_data *data;
    struct event *timer; /* login delay, or the end of a drain's grace */
};

/* ---- ftp.c ---- */
void ftp_reply(struct ftp_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends raw text (a multi-line reply's body lines, already CRLF-ended). */
void ftp_send(struct ftp_session *s, const char *text, size_t len);
void ftp_idle_timeout(struct ftp_session *s, int on);
/* A transfer ended (the data channel is gone): read queued commands again,
 * and move the session if the worker is leaving. */
void ftp_transfer_done(struct ftp_session *s);
/* A QUIT that waited for a transfer's reply: now 221. */
void ftp_quit_if_pending(struct ftp_session *s);
void ftp_login_failed(struct ftp_session *s);
void ftp_count(struct ftp_session *s, int which, uint64_t n);
enum {
    FTP_ACTIVE,
    FTP_SESSIONS,
    FTP_LOGINS,
    FTP_LOGIN_FAILURES,
    FTP_DOWNLOADS,
    FTP_UPLOADS,
    FTP_LISTINGS,
    FTP_ABORTED,
    FTP_BYTES_OUT,
    FTP_BYTES_IN,
    FTP_REFUSED,
    FTP_NCOUNTERS
};

/* ---- ftp_cmd.c ---- */
/* One command line (IAC sequences removed, no CR LF). */
void ftp_command(struct ftp_session *s, char *line, size_t len);
/* Whether the verb may run while a transfer is under way. */
int ftp_command_during_transfer(const char *line, size_t len);
/* The full virtual path of arg (relative to cwd) in out (FTP_MAX_PATH
 * bytes); -1, replied 553, if it is too long. */
int ftp_resolve(struct ftp_session *s, const char *arg, char *out);
/* A duration in milliseconds, as libevent takes it. */
static inline struct timeval ftp_tv(unsigned ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}
/* Opens a virtual path under the session's root; -1 with errno. */
int ftp_open(struct ftp_session *s, const char *vpath, int flags);
/* Opens the parent folder of vpath (confined) and points *base at its last
 * name, inside vpath; the root has no parent (EPERM). -1 with errno. */
int ftp_open_parent(struct ftp_session *s, const char *vpath, const char **base);
/* The reply for a failed file operation (from errno), and a log line when
 * the path tried to leave the root. */
void ftp_fail(struct ftp_session *s, const char *what, const char *vpath);
/* May the session read (list, download, stat) vpath? If not, says so (550).
 * Anonymous users may not read their upload folder: it is a drop box. */
int ftp_may_read(struct ftp_session *s, const char *vpath);

/* ---- ftp_data.c ---- */
void ftp_cmd_pasv(struct ftp_session *s, const char *arg, int extended);
void ftp_cmd_port(struct ftp_session *s, const char *arg, int extended);
void ftp_cmd_abor(struct ftp_session *s);
/* A transfer command may go on: there is a data channel and no transfer
 * on it. Else replies 425 and returns 0. */
int ftp_data_ready(struct ftp_session *s);
/* The 150 reply is out: connect (active) or wait for the client's
 * connection (passive), then the transfer starts; takes vpath. */
void ftp_data_go(struct ftp_session *s, const char *verb, char *vpath, enum ftp_xfer kind);
/* The transfer is over: the channel closes (with why, as a failure), the
 * reply goes out, and the session goes on, ends or moves: s may be gone
 * afterwards. */
void ftp_xfer_end(struct ftp_session *s, int code, const char *text, const char *why);

/* ---- ftp_transfer.c ---- */
void ftp_cmd_retr(struct ftp_session *s, const char *arg);
void ftp_cmd_stor(struct ftp_session *s, const char *arg, int how); /* 0 STOR, 1 APPE, 2 STOU */
void ftp_cmd_list(struct ftp_session *s, const char *arg, enum ftp_list_kind kind);
/* The data connection is up: bytes flow. */
void ftp_transfer_start(struct ftp_session *s);
/* Ends the data channel and any transfer: with why, a failed transfer's
 * partial upload is removed and the transfer is logged as incomplete. */
void ftp_data_close(struct ftp_session *s, const char *why);
void ftp_data_describe(const struct ftp_session *s, char *buf, size_t len);

/* ---- ftp_text.c (pure; unit-tested) ---- */
/* Removes Telnet IAC sequences in place (IAC IAC is a literal 0xff);
 * returns the new length. */
size_t ftp_strip_telnet(char *line, size_t len);
/* Splits "VERB arg" in place: the verb upper-cased into verb (at most 4
 * letters, NUL-terminated), *arg the argument ("" when none). -1 if the
 * verb is not 3-4 letters or the line holds a NUL. */
int ftp_split(char *line, size_t len, char verb[5], char **arg);
/* Resolves arg against cwd lexically into an absolute virtual path with
 * no "." or ".." segments and no repeated or trailing slashes ("/" for the
 * root); ".." at the root stays at the root, as in a chroot. 0, or -1 if
 * the result would not fit in outlen. */
int ftp_vpath(const char *cwd, const char *arg, char *out, size_t outlen);
/* PORT h1,h2,h3,h4,p1,p2 and EPRT |af|addr|port|: 0, or -1 if malformed. */
int ftp_parse_port(const char *arg, struct sockaddr_storage *ss, socklen_t *len);
int ftp_parse_eprt(const char *arg, struct sockaddr_storage *ss, socklen_t *len);
/* One LIST line ("ls -l" form, CRLF-ended) for name with st; link is the
 * symlink's target or NULL; now decides "HH:MM" or " YYYY". Returns the
 * length written (truncated to fit len) */
size_t ftp_list_line(char *out, size_t len, const char *name, const struct stat *st,
                     const char *link, time_t now);
/* MLSx facts (RFC 3659) for st: "type=...;size=...;modify=...;perm=...;unique=...;"
 * restricted to the facts in mask (FACT_*), with perm from the user's
 * permissions. Returns the length written. */
enum { FACT_TYPE = 1, FACT_SIZE = 2, FACT_MODIFY = 4, FACT_PERM = 8, FACT_UNIQUE = 16 };
#define FACT_ALL 31
size_t ftp_facts(char *out, size_t len, const struct stat *st, unsigned perms, unsigned mask);
/* CR and LF in len bytes of s become '?': a name can break no reply. */
void ftp_clean(char *s, size_t len);
/* A path inside a 257 reply: double quotes doubled (RFC 959). */
size_t ftp_quote(char *out, size_t len, const char *path);
