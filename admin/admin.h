/*
 * The admin console as a module: a supervisor-side service with a
 * configuration section of its own (admin = { ... }), its console commands,
 * and a worker-side part that answers its questions about connections and
 * listeners. Its protocol is shared DESIGN.md §3, "Admin protocol".
 */
#pragma once

#include "core/module.h"

extern const struct module admin_module;
