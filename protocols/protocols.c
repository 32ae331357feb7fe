/* The protocols this build serves. Add a protocol here and nowhere in core/. */
#include "protocols/protocol.h"

#include "protocols/chat/chat.h"
#include "protocols/http/http.h"

const struct protocol *const protocols_all[] = {
    &chat_protocol,
    &http_protocol,
    NULL,
};

int protocol_index(const struct protocol *p)
{
    for (int i = 0; protocols_all[i]; i++)
        if (protocols_all[i] == p)
            return i;
    return -1;
}
