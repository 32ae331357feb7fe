/* Probe: core including the admin console. Must not compile. */
#include "core/module.h"
#include "admin/admin.h"
