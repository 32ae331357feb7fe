/*
 * Connection set-up, byte accounting and closing. Bytes are counted by
 * evbuffer callbacks, so protocols never have to remember to.
 */
#include "core/conn.h"

#include "core/config.h"
#include "core/log.h"
#include "core/worker.h"
#include "protocols/protocol.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void touch(struct conn *c)
{
    struct timeval tv;
    event_base_gettimeofday_cached(c->w->base, &tv);
    c->last_active = tv.tv_sec;
}

static void count_in(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    struct conn *c = arg;
    if (info->n_added) {
        c->bytes_in += info->n_added;
        stat_add(&c->w->stats->bytes_in, info->n_added);
        touch(c);
    }
}

static void count_out(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    struct conn *c = arg;
    if (info->n_deleted) {
        c->bytes_out += info->n_deleted;
        stat_add(&c->w->stats->bytes_out, info->n_deleted);
        touch(c);
    }
}

struct conn *conn_new(struct worker *w, const struct service *svc, int fd, const char *peer)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        log_error(peer, "out of memory accepting a connection");
        close(fd);
        return NULL;
    }
    c->fd = fd;
    if (!svc->proto->raw_io &&
        !(c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE))) {
        log_error(peer, "cannot set up connection buffers");
        close(fd);
        free(c);
        return NULL;
    }
    c->w = w;
    c->id = ((uint64_t)w->id << 48) | ++w->next_conn_seq;
    c->cfg = config_ref(w->cfg);
    c->svc = svc;
    gettimeofday(&c->started, NULL);
    c->last_active = c->started.tv_sec;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    if (c->bev) {
        evbuffer_add_cb(bufferevent_get_input(c->bev), count_in, c);
        evbuffer_add_cb(bufferevent_get_output(c->bev), count_out, c);
    }

    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    stat_add(&w->stats->accepted, 1);
    stat_add(&w->stats->active, 1);
    return c;
}

void conn_close(struct conn *c)
{
    if (c->closing == 2)
        return;
    c->closing = 2;
    int idx = protocol_index(c->svc->proto);
    if (c->svc->proto->closed)
        c->svc->proto->closed(worker_proto_state(c->w, idx), c);
    struct worker *w = c->w;
    if (c->bev)
        bufferevent_free(c->bev);
    else
        close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    stat_sub(&w->stats->active, 1);
    stat_add(&w->stats->closed, 1);
    config_unref(c->cfg);
    free(c);
    worker_conn_gone(w);
}

static void flushed_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_close(arg);
}

static void flush_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_close(arg);
}

void conn_close_after_flush(struct conn *c, unsigned timeout_ms)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (!c->bev) { /* raw_io protocols flush before they ask */
        conn_close(c);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) == 0) {
        conn_close(c);
        return;
    }
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_setcb(c->bev, NULL, flushed_cb, flush_event_cb, c);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    bufferevent_enable(c->bev, EV_WRITE);
}

void conn_count_error(struct conn *c)
{
    stat_add(&c->w->stats->errors, 1);
}

void conn_count_in(struct conn *c, size_t n)
{
    touch(c);
    c->bytes_in += n;
    stat_add(&c->w->stats->bytes_in, n);
}

void conn_count_out(struct conn *c, size_t n)
{
    touch(c);
    c->bytes_out += n;
    stat_add(&c->w->stats->bytes_out, n);
}
