/*
 * Per-worker handler contexts (h2o's on_context_init/on_context_dispose).
 *
 * A configuration snapshot is immutable and shared by every worker, so a
 * handler that keeps state per worker (the static handler's open-file
 * cache, auth's verified credentials, redirect's compiled pattern) gets it
 * here instead: one http_ctx per HTTP server of a snapshot, per worker,
 * holding each handler's context by the handler's index.
 *
 * Life cycle, all on the worker that owns the http_ctx:
 *   - made the first time the worker serves a connection under that
 *     snapshot (accepted, or moved here from a leaving worker);
 *   - held by every connection under it, and by the worker itself while
 *     that snapshot is the one it serves, so caches outlive connections;
 *   - disposed of when neither holds it: after a reload, when the last
 *     connection accepted under the old snapshot closes or moves away.
 * The http_ctx keeps its own reference to the snapshot, so the handlers it
 * points at outlive it.
 */
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/worker.h"
#include "protocols/http/http_conn.h"

#include <stdlib.h>

struct http_ctx {
    struct list node; /* the worker's contexts */
    const struct http_server *srv;
    struct config *cfg; /* keeps srv (a reference) */
    unsigned refs;      /* connections, +1 while cfg is the worker's snapshot */
    int current;
    int worker; /* made here; disposed only here */
    void *handler[];
};

static void dispose(struct http_worker *hw, struct http_ctx *x)
{
    if (x->worker != hw->w->id) /* a contract, not a recoverable error */
        log_error(NULL, "http: contexts made on worker %d disposed on worker %d", x->worker,
                  hw->w->id);
    for (size_t v = 0; v < x->srv->nvhosts; v++) {
        const struct http_vhost *vh = &x->srv->vhosts[v];
        for (size_t i = 0; i < vh->nhandlers; i++) {
            struct http_handler *h = &vh->handlers[i];
            if (h->ops->ctx_dispose && x->handler[h->index])
                h->ops->ctx_dispose(h, x->handler[h->index]);
        }
    }
    log_debug(NULL, "http: contexts of server %s (snapshot %lu) disposed", x->srv->name,
              x->cfg->generation);
    list_remove(&x->node);
    config_unref(x->cfg);
    free(x);
}

static struct http_ctx *make(struct http_worker *hw, const struct conn *c)
{
    const struct http_server *srv = c->svc->pcfg;
    struct http_ctx *x = calloc(1, sizeof *x + srv->nhandlers * sizeof *x->handler);
    if (!x) {
        log_error(c->peer, "http: out of memory for handler contexts");
        return NULL;
    }
    x->srv = srv;
    x->cfg = config_ref(c->cfg);
    x->worker = hw->w->id;
    list_insert_head(&hw->contexts, &x->node);
    for (size_t v = 0; v < srv->nvhosts; v++) {
        const struct http_vhost *vh = &srv->vhosts[v];
        for (size_t i = 0; i < vh->nhandlers; i++) {
            struct http_handler *h = &vh->handlers[i];
            if (h->ops->ctx_init && h->ops->ctx_init(h, hw->w, &x->handler[h->index]) < 0) {
                log_error(c->peer, "http: the %s handler at %s cannot start on this worker",
                          h->ops->type, h->path);
                dispose(hw, x);
                return NULL;
            }
        }
    }
    if (c->cfg == hw->w->cfg) {
        x->current = 1;
        x->refs = 1;
    }
    log_debug(NULL, "http: contexts of server %s (snapshot %lu) made", srv->name,
              c->cfg->generation);
    return x;
}

struct http_ctx *http_ctx_get(struct http_worker *hw, const struct conn *c)
{
    struct http_ctx *x = NULL;
    struct list *pos;
    list_for_each(pos, &hw->contexts)
    {
        struct http_ctx *y = list_entry(pos, struct http_ctx, node);
        if (y->srv == c->svc->pcfg) {
            x = y;
            break;
        }
    }
    if (!x && !(x = make(hw, c)))
        return NULL;
    x->refs++;
    return x;
}

void http_ctx_put(struct http_worker *hw, struct http_ctx *x)
{
    if (x && --x->refs == 0)
        dispose(hw, x);
}

void http_ctx_worker_config(struct http_worker *hw, const struct config *cfg)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &hw->contexts)
    {
        struct http_ctx *x = list_entry(pos, struct http_ctx, node);
        if (x->current && x->cfg != cfg) {
            x->current = 0;
            http_ctx_put(hw, x);
        }
    }
}

void *http_ctx_handler(const struct http_ctx *x, const struct http_handler *h)
{
    return x ? x->handler[h->index] : NULL;
}
