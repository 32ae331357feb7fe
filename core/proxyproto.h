/*
 * The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt): the
 * header a load balancer sends first on each connection, naming the client
 * it accepted. A listener marked "proxy_protocol" requires it; the core
 * reads it before the module sees the connection (worker.c) and the client
 * address it names becomes the connection's peer.
 */
#pragma once

#include <stddef.h>
#include <sys/socket.h>

/* The longest header accepted: a v1 line is at most 107 bytes; a v2 header
 * is 16 bytes plus its addresses and TLVs, which we bound. */
#define PROXY_HEADER_MAX 1024

enum proxy_result { PROXY_MORE = 0, PROXY_DONE = 1, PROXY_BAD = -1 };

/* Parses the start of a connection's bytes. PROXY_DONE: *used bytes are
 * the header; *src is the client's address (family AF_UNSPEC for a LOCAL
 * or UNKNOWN header: the connection's own peer stands). PROXY_MORE: not
 * all there yet. PROXY_BAD: not a valid header (why says what). */
enum proxy_result proxy_header_parse(const unsigned char *buf, size_t len,
                                     struct sockaddr_storage *src, socklen_t *srclen, size_t *used,
                                     const char **why);
