/*
 * A circular doubly linked intrusive list, in the spirit of nginx's
 * ngx_queue.h: the links live inside the element, the head is a sentinel
 * node, and removing an element needs nothing but the element. Every list
 * that unlinks elements from its middle uses this one, so no unlink is
 * written by hand anywhere else.
 *
 *     struct thing { struct list node; ... };
 *     struct list things;  list_init(&things);
 *     list_insert_head(&things, &t->node);
 *     list_for_each_safe(pos, tmp, &things) {
 *         struct thing *t = list_entry(pos, struct thing, node); ...
 *     }
 *     list_remove(&t->node);
 *
 * No state beyond the nodes; the owner of a list decides which thread may
 * touch it.
 */
#pragma once

#include <stddef.h>

struct list {
    struct list *prev, *next;
};

static inline void list_init(struct list *h)
{
    h->prev = h->next = h;
}

static inline int list_empty(const struct list *h)
{
    return h->next == h;
}

static inline void list_insert_head(struct list *h, struct list *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

static inline void list_insert_tail(struct list *h, struct list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

/* Leaves n linked to itself, so removing it twice is harmless. */
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* The first or last node, or NULL when the list is empty. */
static inline struct list *list_first(const struct list *h)
{
    /* while ((pos = list_first(h))) { unlink and free pos; } empties a list,
     * but clang 14's analyzer does not know that pos->prev is h, so it
     * believes h->next still points at the freed node. */
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc) */
    return h->next == h ? NULL : h->next;
}

static inline struct list *list_last(const struct list *h)
{
    return h->prev == h ? NULL : h->prev;
}

#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Safe against removing pos inside the loop. */
#define list_for_each_safe(pos, tmp, head)                                                         \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)
