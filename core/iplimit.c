/*
 * Connections per client address (iplimit.h): a keyed FNV-1a over the scope
 * and the address text picks one of a fixed set of atomic counters.
 */
#include "core/iplimit.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define IP_SLOTS 65536
static _Atomic uint32_t counts[IP_SLOTS];
static _Atomic uint64_t hash_key;

size_t iplimit_host(const char *peer, char *out, size_t len)
{
    size_t plen = strlen(peer);
    const char *colon = strrchr(peer, ':');
    if (colon && strncmp(peer, "unix:", 5) != 0)
        plen = (size_t)(colon - peer);
    if (plen > 1 && peer[0] == '[')
        peer++, plen -= 2;
    if (plen >= len)
        plen = len - 1;
    memcpy(out, peer, plen);
    out[plen] = '\0';
    return plen;
}

static uint64_t key(void)
{
    uint64_t k = atomic_load_explicit(&hash_key, memory_order_relaxed);
    if (k)
        return k;
    if (getrandom(&k, sizeof k, 0) != sizeof k)
        k = (uint64_t)(uintptr_t)&k ^ (uint64_t)time(NULL);
    k |= 1;
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&hash_key, &zero, k);
    return atomic_load(&hash_key);
}

int iplimit_slot(enum iplimit_kind kind, const char *scope, const char *host)
{
    uint64_t h = key() ^ 0xcbf29ce484222325ull;
    h = (h ^ (unsigned)kind) * 0x100000001b3ull;
    for (const char *p = scope; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull; /* ("ab", "c") is not ("a", "bc") */
    for (const char *p = host; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    h ^= h >> 29;
    return (int)(h % IP_SLOTS);
}

int iplimit_acquire(enum iplimit_kind kind, const char *scope, const char *host, unsigned max)
{
    int slot = iplimit_slot(kind, scope, host);
    if (atomic_fetch_add_explicit(&counts[slot], 1, memory_order_relaxed) >= max) {
        atomic_fetch_sub_explicit(&counts[slot], 1, memory_order_relaxed);
        return -1;
    }
    return slot;
}

void iplimit_release(int slot)
{
    if (slot >= 0 && slot < IP_SLOTS)
        atomic_fetch_sub_explicit(&counts[slot], 1, memory_order_relaxed);
}

unsigned iplimit_count(enum iplimit_kind kind, const char *scope, const char *host)
{
    return atomic_load_explicit(&counts[iplimit_slot(kind, scope, host)], memory_order_relaxed);
}
