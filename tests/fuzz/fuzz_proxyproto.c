/*
 * The PROXY protocol parser (core/proxyproto.c), as the worker calls it
 * (worker.c's proxy_read_cb): the bytes so far, growing a piece at a time.
 * Properties: a verdict never changes as more bytes come (MORE may become
 * DONE or BAD; DONE and BAD stay), DONE uses no more bytes than it had and
 * names an address that fits its length, and the whole input parsed at
 * once says what the pieces said.
 */
#include "core/proxyproto.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > PROXY_HEADER_MAX)
        size = PROXY_HEADER_MAX;
    /* a copy of exactly the bytes there are: ASan sees any read past them */
    unsigned char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    enum proxy_result last = PROXY_MORE;
    size_t last_used = 0;
    for (size_t have = 1; have <= size; have++) {
        unsigned char *piece = malloc(have);
        memcpy(piece, buf, have);
        struct sockaddr_storage src;
        socklen_t srclen = 0;
        size_t used = 0;
        const char *why = NULL;
        enum proxy_result r = proxy_header_parse(piece, have, &src, &srclen, &used, &why);
        free(piece);
        if (r == PROXY_BAD && !why)
            abort(); /* a refusal always says why */
        if (r == PROXY_DONE) {
            if (used == 0 || used > have || srclen > sizeof src)
                abort();
            if (srclen && !(src.ss_family == AF_INET && srclen == sizeof(struct sockaddr_in)) &&
                !(src.ss_family == AF_INET6 && srclen == sizeof(struct sockaddr_in6)) &&
                src.ss_family != AF_UNIX)
                abort();
        }
        if (last != PROXY_MORE && r != last)
            abort(); /* more bytes changed a verdict */
        if (last == PROXY_DONE && used != last_used)
            abort(); /* the header's end moved */
        last = r;
        last_used = used;
        if (r != PROXY_MORE)
            break; /* the worker stops here too */
    }
    free(buf);
    return 0;
}
