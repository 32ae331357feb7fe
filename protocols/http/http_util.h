/*
 * Helpers of the HTTP server, kept apart so unit tests can reach them:
 * path normalisation, HTTP dates, byte ranges,
 * virtual host matching, MIME types. No state; any thread. (Confined opening
 * is core/fs.h, shared with FTP.)
 */
#pragma once

#include "core/sbuf.h"

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct http_server;
struct http_vhost;

/* Decodes %XX and removes "." and ".." segments and repeated slashes.
 * Returns the length written to out (which needs len + 1 bytes), or a
 * negative HTTP status: -400 for a NUL byte, a bad escape or a path that does
 * not start with '/'; -404 for an encoded slash; -403 for ".." above the
 * root. */
long http_path_normalize(const char *in, size_t len, char *out);

/* RFC 9110 IMF-fixdate: 29 characters plus NUL. */
#define HTTP_DATE_LEN 29
void http_date_format(time_t t, char out[HTTP_DATE_LEN + 1]);
/* IMF-fixdate, RFC 850 or asctime; -1 if it is none of them. */
time_t http_date_parse(const char *s, size_t len);

/* A Range header for a representation of size bytes. Returns 1 and
 * [*start, *end) for one satisfiable range, -1 when no range is satisfiable
 * (416), 0 when the header is to be ignored (malformed, not bytes, or
 * several ranges: the whole representation is sent). */
int http_range_parse(const char *s, size_t len, off_t size, off_t *start, off_t *end);

/* The virtual host for a Host value (port and trailing dot ignored, case
 * insensitive): an exact name, else the longest matching "*.suffix", else
 * the server's default. */
const struct http_vhost *http_vhost_match(const struct http_server *srv, const char *host,
                                          size_t len);

/* MIME types from a mime.types file ("type ext ext ..."). */
struct mime_table;
struct mime_table *mime_load(const char *path, char *err, size_t errlen);
/* The type for a file name by its extension; "application/octet-stream"
 * when unknown. */
const char *mime_lookup(const struct mime_table *t, const char *name);
void mime_free(struct mime_table *t);
