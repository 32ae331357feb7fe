/* Counter slots for every possible worker, and the process start time. */
#include "core/stats.h"

#include "core/bus.h"

#include <time.h>

static struct worker_stats slots[BUS_MAX_WORKERS + 1];
static long long started;

__attribute__((constructor)) static void stats_init(void)
{
    started = (long long)time(NULL);
}

struct worker_stats *stats_slot(int id)
{
    return &slots[id];
}

long long stats_started(void)
{
    return started;
}
