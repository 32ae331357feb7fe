/*
 * A client connection, owned for its whole life by the worker that accepted
 * it. The core makes the bufferevent, counts bytes, keeps the worker's list
 * and limits, and closes; the protocol owns proto_ctx and everything it
 * says. Worker thread only.
 */
#pragma once

#include <event2/bufferevent.h>
#include <stdint.h>
#include <sys/time.h>
#include <time.h>

struct config;
struct service;
struct worker;

struct conn {
    struct conn *prev, *next; /* the worker's list */
    uint64_t id;              /* unique in the process: worker id in the top 16 bits */
    struct worker *w;
    struct config *cfg;        /* snapshot it was accepted under (a reference) */
    const struct service *svc; /* in cfg */
    struct bufferevent *bev;   /* NULL for raw_io protocols */
    int fd;
    void *proto_ctx;
    uint64_t bytes_in, bytes_out;
    struct timeval started;
    time_t last_active;   /* seconds (wall clock, the loop's cached time) */
    unsigned closing : 2; /* 1: flushing before close, 2: closed */
    char peer[64];
};

/* Closes now: the protocol's closed() runs first, then everything is freed. */
void conn_close(struct conn *c);
/* Stops reading, sends what is queued, then closes; gives up after
 * timeout_ms if the peer does not read. */
void conn_close_after_flush(struct conn *c, unsigned timeout_ms);
/* A protocol error or a socket error: counted in the worker's stats. */
void conn_count_error(struct conn *c);
/* Byte accounting for raw_io protocols (bufferevents count their own). */
void conn_count_in(struct conn *c, size_t n);
void conn_count_out(struct conn *c, size_t n);

/* For worker.c: wraps an accepted descriptor; NULL (fd closed) on failure. */
struct conn *conn_new(struct worker *w, const struct service *svc, int fd, const char *peer);
