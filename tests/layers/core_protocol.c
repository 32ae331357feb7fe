/* Probe: core including a protocol. Must not compile. */
#include "core/module.h"
#include "protocols/http/http.h"
