/* The module registry; see module.h. */
#include "core/module.h"

#define MODULES_MAX 32

static const struct module *registered[MODULES_MAX + 1]; /* [0] unused: the core */
static unsigned count;

void modules_register(const struct module *const *list)
{
    count = 0;
    for (size_t i = 0; list && list[i] && count < MODULES_MAX; i++)
        registered[++count] = list[i];
}

unsigned module_count(void)
{
    return count;
}

const struct module *module_at(unsigned id)
{
    return id >= 1 && id <= count ? registered[id] : NULL;
}

unsigned module_id(const struct module *m)
{
    for (unsigned i = 1; i <= count; i++)
        if (registered[i] == m)
            return i;
    return 0;
}
