/* Probe: the admin console including a protocol. Must not compile. */
#include "admin/admin.h"
#include "protocols/chat/chat.h"
