/* Resolvers for upstream names, one evdns base per resolver setting, on
 * one thread's loop (a worker's for requests, the supervisor's for health
 * checks). */
#include "protocols/http/proxy/upstream.h"

#include <event2/dns.h>
#include <stdlib.h>
#include <string.h>

struct evdns_base *px_dns_get(struct px_dns *d, struct event_base *base, const char *resolver)
{
    for (unsigned i = 0; i < d->n; i++)
        if (resolver ? d->v[i].resolver && strcmp(resolver, d->v[i].resolver) == 0
                     : !d->v[i].resolver)
            return d->v[i].base;
    if (d->n == sizeof d->v / sizeof *d->v) /* more resolvers than that: share the first */
        return d->v[0].base;
    struct evdns_base *b = evdns_base_new(base, resolver ? 0 : EVDNS_BASE_INITIALIZE_NAMESERVERS);
    char *copy = resolver ? strdup(resolver) : NULL;
    if (!b || (resolver && (!copy || evdns_base_nameserver_ip_add(b, resolver) != 0))) {
        if (b)
            evdns_base_free(b, 0);
        free(copy);
        return NULL;
    }
    d->v[d->n].resolver = copy;
    d->v[d->n++].base = b;
    return b;
}

void px_dns_free(struct px_dns *d, int fail_requests)
{
    for (unsigned i = 0; i < d->n; i++) {
        evdns_base_free(d->v[i].base, fail_requests);
        free(d->v[i].resolver);
    }
    d->n = 0;
}
