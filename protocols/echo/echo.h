/*
 * echo: RFC 862's Echo Protocol over TCP. The smallest complete module, and
 * the one docs/writing-a-protocol.md walks through: every byte a client
 * sends comes back. Memory is bounded per connection: a client that sends
 * but does not read is disconnected once max_output bytes wait for it.
 * Sessions move to another worker when theirs leaves. Worker thread only,
 * but for stats (any thread).
 */
#pragma once

#include "core/module.h"

extern const struct module echo_module;
