/*
 * The admin console: a line protocol for operators (shared DESIGN.md §3,
 * "Admin protocol"), served on the supervisor thread. It owns its listeners
 * and sessions; it acts on workers only through the supervisor's functions
 * (core/supervisor.h), which act through the bus.
 *
 * Every reply is "STATUS LENGTH\n" followed by LENGTH bytes. Unix sessions
 * are admin level once the peer's uid is checked; TCP sessions first get a
 * 401 whose body is a fresh random challenge and must answer
 * "auth HEX(HMAC-SHA256(secret, challenge))" with the admin or operator
 * secret. Supervisor thread only.
 */
#pragma once

#include <stddef.h>

struct config;
struct event_base;
struct supervisor;
struct admin;

/* Opens the configuration's admin listeners; NULL (with err) on failure.
 * With no listener configured, returns a console that listens nowhere. */
struct admin *admin_start(struct event_base *base, struct supervisor *sup, const struct config *cfg,
                          char *err, size_t errlen);
/* A reload: new secrets and limits apply to new sessions; a changed set
 * of listeners is reported and applies at restart. */
void admin_reconfigure(struct admin *a, const struct config *cfg);
void admin_stop(struct admin *a);
/* A worker's MSG_ADMIN_REPLY; the console owns it. */
struct msg;
void admin_message(struct admin *a, struct msg *m);
