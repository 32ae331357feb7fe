/* Probe: one protocol including another. Must not compile. */
#include "protocols/http/http.h"
#include "protocols/chat/chat.h"
