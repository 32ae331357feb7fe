/*
 * HTTP connections (http_conn.c): the protocol callbacks the core calls on
 * a worker. Worker thread only.
 */
#pragma once

#include "protocols/http/http.h"

struct conn;
struct worker;

void *http_worker_start(struct worker *w);
void http_worker_stop(void *state);
void http_accept(void *state, struct conn *c);
void http_closed(void *state, struct conn *c);
void http_stopping(void *state, struct conn *c, unsigned grace_ms);
void http_describe(void *state, struct conn *c, char *buf, size_t len);

/* http_router.c: parses the head's target and known headers, picks the
 * virtual host and runs the handler chain. Afterwards either a response is
 * set, or r->body_taken says the handler wants the body (r->body_max
 * bytes at most). */
void http_route(struct http_req *r);
