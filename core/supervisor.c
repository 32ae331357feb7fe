/*
 * Supervisor thread; see supervisor.h.
 *
 * Listeners. The supervisor keeps the list of (service, address) pairs that
 * are open. It opens the sockets, SO_REUSEPORT sockets for TCP and one
 * shared socket dup'ed per worker for Unix paths, and gives each worker its
 * descriptors in MSG_LISTEN_ADD; from then on the worker owns them. Opening
 * happens before anything is committed, so a reload whose new listener
 * cannot be bound changes nothing. How many sockets a TCP listener has, and
 * who holds them while workers come and go, is scaling.c's business.
 *
 * Reload (SIGHUP): parse and validate a new snapshot; open the listeners it
 * adds; only then send workers the new snapshot, the new listeners, and the
 * removals; then tell every module. On any error the old configuration
 * stays active, and the error is logged with file:line.
 *
 * Stop (SIGTERM, SIGINT): MSG_STOP with the grace period to every worker;
 * exit 0 when every worker has reported that it exited. A second signal
 * stops at once.
 */
#include "core/supervisor.h"

#include "core/bus.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/listener.h"
#include "core/log.h"
#include "core/module.h"
#include "core/throttle.h"
#include "core/tls.h"
#include "core/supervisor_impl.h"
#include "core/worker.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

int sup_nrunning(const struct supervisor *s)
{
    int n = 0;
    for (int i = 0; i < s->nworkers; i++)
        n += !s->workers[i]->draining;
    return n;
}

static void free_sup_listener(struct sup_listener *l)
{
    if (l->keep_fd >= 0)
        close(l->keep_fd);
    free(l->service);
    free(l);
}

void sup_send_listener(int worker, uint32_t id, int fd, const char *service, const char *text,
                       int disabled)
{
    struct listener_sock *ls = calloc(1, sizeof *ls);
    if (!ls || !(ls->service = strdup(service)) || !(ls->text = strdup(text))) {
        log_error(text, "out of memory handing a listener to worker %d", worker);
        if (ls) {
            ls->fd = fd;
            listener_sock_free(ls);
        } else {
            close(fd);
        }
        return;
    }
    ls->id = id;
    ls->fd = fd;
    ls->disabled = disabled;
    struct msg m = {.type = MSG_LISTEN_ADD, .ptr = ls, .free_fn = listener_sock_free};
    bus_send(worker, &m);
}

/* Opens one descriptor per worker into fds[]; 0, or -1 with err. */
static int open_for_workers(const struct listen_addr *a, int backlog, int n, int *fds, char *err,
                            size_t errlen)
{
    for (int i = 0; i < n; i++) {
        if (a->family == AF_UNIX && i > 0)
            fds[i] = fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
        else
            fds[i] = listener_open(a, backlog, err, errlen);
        if (fds[i] < 0) {
            if (a->family == AF_UNIX && i > 0) {
                snprintf(err, errlen, "dup of %s: %s", a->text, strerror(errno));
                listener_unlink(a); /* bound by us at i == 0 */
            }
            while (i-- > 0)
                close(fds[i]);
            return -1;
        }
    }
    return 0;
}

static struct sup_listener *find_listener(struct supervisor *s, const char *service,
                                          const char *text)
{
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        struct sup_listener *l = sup_listener_of(pos);
        if (strcmp(l->service, service) == 0 && strcmp(l->addr.text, text) == 0)
            return l;
    }
    return NULL;
}

static int in_config(const struct config *c, const struct sup_listener *l)
{
    const struct service *svc = config_service(c, l->service);
    for (size_t i = 0; svc && i < svc->nlisten; i++)
        if (strcmp(svc->listen[i].text, l->addr.text) == 0)
            return 1;
    return 0;
}

struct pending_open {
    struct pending_open *next;
    struct sup_listener *l; /* NULL once committed to s->listeners */
    int *fds;               /* one per worker, then -1 */
};

/* Frees the list; with undo, also closes and unlinks what it opened. */
static void pending_free(struct pending_open *p, int undo)
{
    while (p) {
        struct pending_open *next = p->next;
        if (undo && p->l) {
            for (int i = 0; p->fds[i] >= 0; i++)
                close(p->fds[i]);
            listener_unlink(&p->l->addr);
        }
        if (p->l)
            free_sup_listener(p->l);
        free(p->fds);
        free(p);
        p = next;
    }
}

static struct pending_open *pending_new(const struct service *svc, const struct listen_addr *a,
                                        int nworkers)
{
    struct pending_open *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->l = calloc(1, sizeof *p->l);
    p->fds = malloc(sizeof(int) * (size_t)(nworkers + 1));
    if (!p->l || !p->fds || !(p->l->service = strdup(svc->name))) {
        pending_free(p, 0);
        return NULL;
    }
    p->l->addr = *a;
    p->l->keep_fd = -1;
    for (int i = 0; i <= nworkers; i++)
        p->fds[i] = -1;
    return p;
}

/* Opens every listener of cfg that is not open yet. Nothing is handed to
 * workers here, so failure is undone by closing what this call opened (and
 * never touching a path that another server owns). */
static int open_new_listeners(struct supervisor *s, const struct config *cfg,
                              struct pending_open **out, char *err, size_t errlen)
{
    *out = NULL;
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct service *svc = &cfg->services[i];
        for (size_t a = 0; a < svc->nlisten; a++) {
            if (find_listener(s, svc->name, svc->listen[a].text))
                continue;
            struct pending_open *p = pending_new(svc, &svc->listen[a], sup_nrunning(s));
            if (!p) {
                snprintf(err, errlen, "out of memory opening %s", svc->listen[a].text);
                goto fail;
            }
            if (open_for_workers(&svc->listen[a], cfg->backlog, sup_nrunning(s), p->fds, err,
                                 errlen) < 0) {
                pending_free(p, 0); /* it cleaned up after itself */
                goto fail;
            }
            p->next = *out;
            *out = p;
        }
    }
    return 0;
fail:
    pending_free(*out, 1);
    *out = NULL;
    return -1;
}

/* Tells workers, in this order: removed listeners (each worker accepts
 * what is queued under the configuration it has, so those clients are
 * served), then the new snapshot (unless it is the one they have), then the
 * added listeners, whose services exist only in the new snapshot. */
static void commit_config(struct supervisor *s, struct config *cfg, struct pending_open *opened)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &s->listeners)
    {
        struct sup_listener *l = sup_listener_of(pos);
        if (in_config(cfg, l))
            continue;
        list_remove(&l->node);
        for (int w = 0; w < s->nworkers; w++) {
            struct msg m = {.type = MSG_LISTEN_REMOVE, .a = l->id};
            bus_send(s->workers[w]->id, &m);
        }
        listener_unlink(&l->addr);
        log_info(l->addr.text, "listener removed (%s)", l->service);
        free_sup_listener(l);
    }
    for (int w = 0; cfg != s->cfg && w < s->nworkers; w++) {
        struct msg m = {
            .type = MSG_CONFIG, .ptr = config_ref(cfg), .free_fn = (void (*)(void *))config_unref};
        bus_send(s->workers[w]->id, &m);
    }
    for (struct pending_open *p = opened; p; p = p->next) {
        p->l->id = ++s->next_listener_id;
        if (p->l->addr.family == AF_UNIX &&
            (p->l->keep_fd = fcntl(p->fds[0], F_DUPFD_CLOEXEC, 0)) < 0)
            log_error(p->l->addr.text, "cannot keep a copy of the socket for new workers: %s",
                      strerror(errno));
        for (int w = 0, k = 0; w < s->nworkers; w++) {
            if (s->workers[w]->draining)
                continue; /* it is leaving: no new sockets for it */
            if (p->l->addr.family != AF_UNIX)
                p->l->held[s->workers[w]->id] = 1;
            sup_send_listener(s->workers[w]->id, p->l->id, p->fds[k++], p->l->service,
                              p->l->addr.text, 0);
        }
        list_insert_head(&s->listeners, &p->l->node);
        log_info(p->l->addr.text, "listening (%s, %d worker%s)", p->l->service, sup_nrunning(s),
                 sup_nrunning(s) == 1 ? "" : "s");
        p->l = NULL; /* the supervisor's list owns it now */
    }
    pending_free(opened, 0);
}

static void apply_log(const struct config *cfg)
{
    log_set_level(cfg->log_level);
    if (log_open(cfg->error_log) < 0)
        log_error(NULL, "cannot open error log %s: %s; logging stays where it was", cfg->error_log,
                  strerror(errno));
}

static int reload(struct supervisor *s, char *err, size_t errlen)
{
    notify_reloading();
    log_info(NULL, "reloading %s", s->config_path);
    struct config *cfg = config_load(s->config_path, err, errlen);
    struct pending_open *opened = NULL;
    if (!cfg || open_new_listeners(s, cfg, &opened, err, errlen) < 0) {
        log_error(NULL, "reload failed: %s; the old configuration is still active", err);
        config_unref(cfg);
        sd_notify(0, "READY=1\nSTATUS=reload failed; old configuration active");
        return -1;
    }
    /* 'workers' applies when the file changed it (a runtime 'workers set'
     * stands until then), and never under -w. */
    int rescale = !s->workers_override && cfg->workers != s->cfg->workers;
    apply_log(cfg);
    commit_config(s, cfg, opened);
    config_unref(s->cfg);
    s->cfg = cfg;
    if (rescale) {
        char msg[160];
        if (sup_scale(s, cfg->workers, msg, sizeof msg) < 0)
            log_error(NULL, "'workers = %d' not applied: %s", cfg->workers, msg);
        else
            log_info(NULL, "'workers' is now %d in the file: applied live", cfg->workers);
    }
    tls_keys_set_rotation(cfg->tls_ticket_rotate);
    throttle_configure(cfg);
    for (unsigned i = 1; i <= module_count(); i++)
        if (module_at(i)->sup_config && s->mstate[i])
            module_at(i)->sup_config(s->mstate[i], cfg);
    log_info(NULL, "configuration reloaded (snapshot %lu)", cfg->generation);
    s->status[0] = '\0'; /* the next tick says it again */
    sd_notify(0, "READY=1");
    return 0;
}

static void stop(struct supervisor *s, unsigned grace_ms)
{
    if (s->stopping && grace_ms)
        return;
    if (!s->stopping) {
        sd_notify(0, "STOPPING=1");
        log_info(NULL, "stopping (grace period %u ms)", grace_ms);
    } else {
        log_info(NULL, "stopping now");
    }
    s->stopping = 1;
    for (int w = 0; w < s->nworkers; w++) {
        struct msg m = {.type = MSG_STOP, .a = grace_ms};
        bus_send(s->workers[w]->id, &m);
    }
}

static void request_stats(struct supervisor *s)
{
    if (s->stats_pending)
        return;
    s->stats_req++;
    memset(&s->stats_total, 0, sizeof s->stats_total);
    for (int w = 0; w < s->nworkers; w++) {
        struct msg m = {.type = MSG_STATS_REQ, .a = s->stats_req};
        bus_send(s->workers[w]->id, &m);
        s->stats_asked[s->workers[w]->id] = 1;
        s->stats_pending++;
    }
}

static void stats_answered(struct supervisor *s, int id)
{
    if (!s->stats_asked[id])
        return;
    s->stats_asked[id] = 0;
    struct worker_stats_snapshot *t = &s->stats_total;
    if (--s->stats_pending == 0)
        log_info(NULL,
                 "stats total: workers=%d accepted=%llu active=%llu closed=%llu "
                 "bytes_in=%llu bytes_out=%llu errors=%llu",
                 s->nworkers, (unsigned long long)t->accepted, (unsigned long long)t->active,
                 (unsigned long long)t->closed, (unsigned long long)t->bytes_in,
                 (unsigned long long)t->bytes_out, (unsigned long long)t->errors);
}

static void on_stats_reply(struct supervisor *s, struct msg *m)
{
    struct worker_stats_snapshot *w = m->ptr;
    if (m->a != s->stats_req || !s->stats_asked[m->from])
        return;
    log_info(NULL,
             "stats worker %d: accepted=%llu active=%llu closed=%llu bytes_in=%llu "
             "bytes_out=%llu errors=%llu inbox=%zu",
             w->worker, (unsigned long long)w->accepted, (unsigned long long)w->active,
             (unsigned long long)w->closed, (unsigned long long)w->bytes_in,
             (unsigned long long)w->bytes_out, (unsigned long long)w->errors,
             bus_inbox_depth(w->worker));
    stats_sum(&s->stats_total, w);
    stats_answered(s, m->from);
}

static void worker_exited(struct supervisor *s, int id)
{
    int was_running = 0;
    for (int i = 0; i < s->nworkers; i++) {
        if (s->workers[i]->id != id)
            continue;
        struct worker *w = s->workers[i];
        was_running = !w->draining;
        worker_join_free(w);
        memmove(&s->workers[i], &s->workers[i + 1],
                sizeof *s->workers * (size_t)(s->nworkers - i - 1));
        s->nworkers--;
        notify_forget(s, id);
        break;
    }
    scaling_worker_gone(s, id);
    stats_answered(s, id); /* it will not answer now */
    if (!s->stopping) {
        if (was_running) {
            log_error(NULL, "worker %d exited unexpectedly; %d running", id, sup_nrunning(s));
            scaling_place_sockets(s);
        } else {
            log_info(NULL, "worker %d exited; %d running", id, sup_nrunning(s));
        }
        int max = (int)(sizeof s->stopped / sizeof *s->stopped);
        if (s->nstopped == max)
            memmove(s->stopped, s->stopped + 1, sizeof *s->stopped * (size_t)--s->nstopped);
        s->stopped[s->nstopped++] = id;
    }
    if (--s->running == 0)
        event_base_loopexit(s->base, NULL);
}

static void dispatch(struct msg *m, void *arg)
{
    struct supervisor *s = arg;
    if (m->module) {
        const struct module *mod = module_at(m->module);
        if (mod && mod->sup_message && s->mstate[m->module]) {
            mod->sup_message(s->mstate[m->module], m);
            return;
        }
        log_error(NULL, "message %u for module %u from thread %u: nobody takes it", m->type,
                  m->module, m->from);
        msg_release(m);
        return;
    }
    switch (m->type) {
    case MSG_WORKER_EXITED:
        worker_exited(s, m->from);
        break;
    case MSG_STATS_REPLY:
        on_stats_reply(s, m);
        break;
    case MSG_LISTEN_BACK:
        scaling_on_listen_back(s, m->ptr, m->from);
        return;
    case MSG_CONN_MOVE:
        scaling_on_conn_move(s, m);
        return;
    case MSG_PONG:
        notify_pong(s, m->from, m->a);
        break;
    case MSG_AUTH_FAILED:
        throttle_sup_message(m);
        break;
    default:
        log_error(NULL, "unexpected message type %u from thread %u", m->type, m->from);
    }
    msg_release(m);
}

static int reopen_logs(struct supervisor *s)
{
    int failed = 0;
    if (log_reopen() < 0) {
        log_error(NULL, "reopening the error log failed: %s", strerror(errno));
        failed = 1;
    }
    for (size_t i = 0; i < s->cfg->nservices; i++) {
        const struct service *svc = &s->cfg->services[i];
        if (svc->module->reopen && svc->module->reopen(svc->pcfg) < 0)
            failed = 1; /* the module logged which file */
    }
    if (!failed)
        log_info(NULL, "log files reopened");
    return failed ? -1 : 0;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct supervisor *s = arg;
    switch (sig) {
    case SIGTERM:
    case SIGINT:
        stop(s, s->stopping ? 0 : s->cfg->grace_ms);
        break;
    case SIGHUP:
        if (!s->stopping) {
            char err[CONFIG_ERR_MAX];
            reload(s, err, sizeof err);
        }
        break;
    case SIGUSR1:
        reopen_logs(s);
        break;
    case SIGUSR2:
        request_stats(s);
        break;
    }
}

/* Root only binds: with `user` set, the process becomes that user (its
 * groups, then the group, then the user, so that nothing of root's is
 * left) before any worker runs; without it, serving as root takes an
 * explicit allow_root = true. */
static int drop_privileges(const struct config *cfg)
{
    if (geteuid() != 0)
        return 0;
    if (!cfg->user) {
        if (cfg->allow_root) {
            log_warn(NULL, "serving as root: no 'user' is set, and 'allow_root = true'");
            return 0;
        }
        log_error(NULL,
                  "%s: medusad runs as root and the configuration sets no 'user': set "
                  "user = \"medusa\"; (it binds as root, then serves as that user), "
                  "or allow_root = true; to serve as root",
                  cfg->path);
        return -1;
    }
    /* Before any worker starts, so one thread: getpwnam and getgrnam are safe. */
    /* cppcheck-suppress getpwnamCalled */
    struct passwd *pw = getpwnam(cfg->user);
    if (!pw) {
        log_error(NULL, "user '%s' does not exist", cfg->user);
        return -1;
    }
    gid_t gid = pw->pw_gid;
    if (cfg->group) {
        /* cppcheck-suppress getgrnamCalled */
        struct group *gr = getgrnam(cfg->group);
        if (!gr) {
            log_error(NULL, "group '%s' does not exist", cfg->group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    /* setgroups through initgroups: the user's own groups, root's go */
    if (initgroups(cfg->user, gid) < 0 || setresgid(gid, gid, gid) < 0 ||
        setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0) {
        log_error(NULL, "cannot switch to user '%s': %s", cfg->user, strerror(errno));
        return -1;
    }
    if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        log_error(NULL, "root could be regained after switching to '%s': stopping", cfg->user);
        return -1;
    }
    log_info(NULL, "running as user %s (uid %u, gid %u)", cfg->user, (unsigned)pw->pw_uid,
             (unsigned)gid);
    return 0;
}

static int start_workers(struct supervisor *s)
{
    s->workers = calloc(BUS_MAX_WORKERS, sizeof *s->workers);
    if (!s->workers)
        return -1;
    for (int i = 0; i < s->nworkers; i++) {
        if (!(s->workers[i] = worker_new(i + 1, s->cfg))) {
            log_error(NULL, "cannot create worker %d", i + 1);
            return -1;
        }
    }
    return 0;
}

static int modules_start(struct supervisor *s)
{
    for (unsigned i = 1; i <= module_count(); i++) {
        const struct module *m = module_at(i);
        char err[CONFIG_ERR_MAX] = "";
        if (m->sup_init && m->sup_init(s, s->cfg, &s->mstate[i], err, sizeof err) < 0) {
            log_error(NULL, "%s: %s", m->name, err[0] ? err : "cannot start");
            return -1;
        }
    }
    return 0;
}

static void modules_stop(struct supervisor *s)
{
    for (unsigned i = module_count(); i >= 1; i--)
        if (module_at(i)->sup_dispose && s->mstate[i]) {
            module_at(i)->sup_dispose(s->mstate[i]);
            s->mstate[i] = NULL;
        }
}

#define NSIGNALS 5

int supervisor_run(const char *config_path, int workers_override)
{
    struct supervisor sup = {.config_path = config_path, .workers_override = workers_override};
    struct supervisor *s = &sup;
    char err[CONFIG_ERR_MAX];
    int status = 1;
    static const int sigs[NSIGNALS] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    struct event *sev[NSIGNALS] = {0};
    list_init(&s->listeners);

    s->cfg = config_load(config_path, err, sizeof err);
    if (!s->cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    apply_log(s->cfg);
    throttle_configure(s->cfg);
    s->nworkers = workers_override > 0 ? workers_override : s->cfg->workers;

    signal(SIGPIPE, SIG_IGN);
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        s->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    s->mstate = calloc(module_count() + 1, sizeof *s->mstate);
    if (!s->base || !s->mstate || bus_register(BUS_SUPERVISOR) < 0) {
        log_error(NULL, "cannot set up the supervisor: out of memory");
        goto out;
    }
    bus_set_live(BUS_SUPERVISOR, 1);
    tls_thread_init(BUS_SUPERVISOR);
    if (tls_keys_start(s->base, s->cfg->tls_ticket_rotate) < 0)
        goto out;
    if (bus_thread_init(BUS_SUPERVISOR, s->base, dispatch, s) < 0 || start_workers(s) < 0) {
        log_error(NULL, "cannot set up the supervisor's inbox or the workers");
        goto out_workers;
    }
    for (int i = 0; i < NSIGNALS; i++) {
        if (!(sev[i] = evsignal_new(s->base, sigs[i], signal_cb, s)) ||
            event_add(sev[i], NULL) < 0) {
            log_error(NULL, "cannot watch signal %d", sigs[i]);
            goto out_workers;
        }
    }

    struct pending_open *opened;
    if (open_new_listeners(s, s->cfg, &opened, err, sizeof err) < 0) {
        log_error(NULL, "%s", err);
        goto out_workers;
    }
    if (drop_privileges(s->cfg) < 0) {
        pending_free(opened, 1);
        goto out_workers;
    }
    for (int i = 0; i < s->nworkers; i++) {
        if (worker_start(s->workers[i]) < 0) {
            log_error(NULL, "cannot start worker %d: %s", i + 1, strerror(errno));
            pending_free(opened, 1);
            stop(s, 0);
            goto run;
        }
        s->running++;
    }
    commit_config(s, s->cfg, opened);
    if (modules_start(s) < 0) {
        stop(s, 0);
        goto run;
    }
    for (size_t i = 0; i < s->cfg->nservices; i++)
        if (s->cfg->services[i].tls) {
            log_info(NULL, "TLS: kernel TLS offload: %s", tls_ktls_status());
            break;
        }
    log_info(NULL, "medusad started: %d worker%s, pid %d", s->nworkers, s->nworkers == 1 ? "" : "s",
             (int)getpid());
    notify_start(s); /* READY=1 once every worker has answered */
    status = 0;
run:
    if (s->running)
        event_base_dispatch(s->base);
    notify_stop(s);
    modules_stop(s);
out_workers:
    /* Workers that never started are freed without a join. */
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        if (!s->workers[i])
            continue;
        if (bus_is_live(s->workers[i]->id))
            worker_join_free(s->workers[i]);
        else
            worker_free(s->workers[i]);
    }
    free(s->workers);
    struct list *pos;
    while ((pos = list_first(&s->listeners))) {
        struct sup_listener *l = sup_listener_of(pos);
        list_remove(pos);
        listener_unlink(&l->addr);
        free_sup_listener(l);
    }
    if (status == 0)
        log_info(NULL, "medusad stopped");
out:
    for (int i = 0; i < NSIGNALS; i++)
        if (sev[i])
            event_free(sev[i]);
    bus_thread_fini();
    bus_shutdown();
    tls_keys_stop();
    throttle_thread_end();
    throttle_sup_end();
    free(s->mstate);
    if (s->base)
        event_base_free(s->base);
    config_unref(s->cfg);
    return status;
}

/* ---- for supervisor-side modules ---- */

struct event_base *sup_base(struct supervisor *s)
{
    return s->base;
}

const struct config *sup_config(struct supervisor *s)
{
    return s->cfg;
}

const char *sup_config_path(struct supervisor *s)
{
    return s->config_path;
}

void *sup_module_state(struct supervisor *s, const struct module *m)
{
    return s->mstate[module_id(m)];
}

int sup_workers(struct supervisor *s, struct sup_worker_view *out, int max)
{
    int n = 0;
    for (int i = 0; i < s->nworkers && n < max; i++)
        out[n++] = (struct sup_worker_view){
            s->workers[i]->id, s->stopping || s->workers[i]->draining ? "draining" : "running"};
    for (int i = 0; i < s->nstopped && n < max; i++)
        out[n++] = (struct sup_worker_view){s->stopped[i], "stopped"};
    return n;
}

int sup_reload(struct supervisor *s, char *err, size_t errlen)
{
    if (s->stopping) {
        snprintf(err, errlen, "the server is stopping");
        return -1;
    }
    return reload(s, err, errlen);
}

void sup_stop(struct supervisor *s, unsigned grace_ms)
{
    stop(s, grace_ms);
}

int sup_reopen_logs(struct supervisor *s)
{
    return reopen_logs(s);
}

void sup_each_listener(struct supervisor *s,
                       void (*fn)(void *arg, const struct sup_listener_view *l), void *arg)
{
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        struct sup_listener *l = sup_listener_of(pos);
        int is_unix = l->addr.family == AF_UNIX;
        struct sup_listener_view v = {l->id,        l->service, l->addr.text,
                                      !l->disabled, 1,          is_unix ? NULL : l->held};
        if (!is_unix) {
            v.sockets = l->returning;
            for (int i = 0; i <= BUS_MAX_WORKERS; i++)
                v.sockets += l->held[i];
        }
        fn(arg, &v);
    }
}

int sup_listener_enable(struct supervisor *s, const char *which, int enable)
{
    int n = 0;
    struct list *pos;
    list_for_each(pos, &s->listeners)
    {
        struct sup_listener *l = sup_listener_of(pos);
        if (strcmp(l->addr.text, which) != 0 && strcmp(l->service, which) != 0)
            continue;
        l->disabled = !enable;
        n++;
    }
    return n;
}
