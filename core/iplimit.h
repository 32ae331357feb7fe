/*
 * Connections per client address, counted across every worker.
 *
 * A cap on one address's connections must see every worker's, so the
 * count is shared: a fixed table of atomic counters indexed by a keyed hash
 * of a scope (a service's name) and the address text. It is the core's one
 * multi-writer structure besides the statistics; no lock, bounded memory
 * (256 KiB, untouched unless a cap is set). Two addresses that share a slot
 * share its count, which can only make a cap stricter, and with 65,536
 * slots and a per-process key rarely, and never by an attacker's choice.
 *
 * Any thread. A slot taken with iplimit_acquire is given back once, with
 * iplimit_release, on whichever thread the connection ends.
 */
#pragma once

#include <stddef.h>

/* The address part of a peer text ("10.0.0.1:5000" -> "10.0.0.1",
 * "[::1]:80" -> "::1"); returns its length. */
size_t iplimit_host(const char *peer, char *out, size_t len);

/* What is counted: a scope is a name within its kind, so a service named
 * "admin" does not share the console's counts. */
enum iplimit_kind { IPLIMIT_SERVICE = 1, IPLIMIT_CONSOLE, IPLIMIT_FTP_SESSIONS };

/* The slot of (kind, scope, host). */
int iplimit_slot(enum iplimit_kind kind, const char *scope, const char *host);

/* Counts one more connection from host in (kind, scope): its slot, or -1
 * when there are already max (nothing counted then). */
int iplimit_acquire(enum iplimit_kind kind, const char *scope, const char *host, unsigned max);
void iplimit_release(int slot);
/* The current count of (scope, host), for tests and the console. */
unsigned iplimit_count(enum iplimit_kind kind, const char *scope, const char *host);
