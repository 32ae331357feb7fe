/*
 * A growable string for building replies and pages. No locks, no state
 * beyond the struct; any thread on its own sbuf.
 */
#pragma once

#include <stddef.h>

/* A string literal and its length, for calls that take both:
 * sb_add(sb, LIT("\r\n")). The "" pasting refuses anything but a literal. */
#define LIT(s) ("" s ""), (sizeof(s) - 1)

/* A growable string; on allocation failure it stays short and sb->failed
 * is set, so callers check once at the end. */
struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
};
void sb_add(struct sbuf *sb, const char *s, size_t len);
void sb_adds(struct sbuf *sb, const char *s);
void sb_addf(struct sbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* HTML-escapes &, <, >, " and '. */
void sb_add_html(struct sbuf *sb, const char *s, size_t len);
/* Percent-encodes everything but unreserved characters and '/'. */
void sb_add_urlpath(struct sbuf *sb, const char *s, size_t len);
/* A byte count for people: 1023 B, 1.5 KiB, 12 MiB (binary units). */
void sb_add_bytes(struct sbuf *sb, unsigned long long n);
/* Escapes for the inside of a JSON string: quote, backslash, control bytes. */
void sb_add_json(struct sbuf *sb, const char *s);
void sb_free(struct sbuf *sb);
