/*
 * The access log: Combined Log Format (what goaccess and awstats read), one
 * write(2) per line on a descriptor opened O_APPEND, so lines from several
 * workers stay whole without a lock. Bytes a client controls are escaped.
 */
#include "core/conn.h"
#include "core/log.h"
#include "protocols/http/http_conn.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static void log_escaped(struct sbuf *sb, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            sb_addf(sb, "\\x%02X", ch);
        else
            sb_add(sb, s + i, 1);
    }
}

void http_access_log(struct http_conn *hc, struct http_req *r)
{
    const struct http_server *srv = r->srv;
    /* Combined Log Format, host without the port. */
    char peer[64];
    size_t plen = conn_peer_host(r->c, peer, sizeof peer);
    struct sbuf sb = {0};
    sb_add(&sb, peer, plen);
    sb_adds(&sb, " - ");
    if (r->user[0])
        log_escaped(&sb, r->user, strlen(r->user));
    else
        sb_adds(&sb, "-");
    sb_addf(&sb, " [%s] \"", hc->hw->log_time);
    if (r->target.p) {
        sb_adds(&sb, http_method_name(r));
        sb_adds(&sb, " ");
        log_escaped(&sb, r->target.p, r->target.len);
        sb_addf(&sb, " HTTP/1.%d", r->http_minor);
    }
    sb_addf(&sb, "\" %d %llu \"", r->status, (unsigned long long)r->body_bytes);
    const struct http_str *ref = &r->known[HK_REFERER], *ua = &r->known[HK_USER_AGENT];
    if (ref->p)
        log_escaped(&sb, ref->p, ref->len);
    else
        sb_adds(&sb, "-");
    sb_adds(&sb, "\" \"");
    if (ua->p)
        log_escaped(&sb, ua->p, ua->len);
    else
        sb_adds(&sb, "-");
    sb_adds(&sb, "\"");
    /* Proxied: where it went, what came back, how long it took (nginx's
     * $upstream_addr $upstream_status $upstream_response_time). */
    if (r->upstream[0])
        sb_addf(&sb, " upstream=%s upstream_status=%d upstream_time=%u.%03u", r->upstream,
                r->upstream_status, r->upstream_ms / 1000, r->upstream_ms % 1000);
    sb_adds(&sb, "\n");
    /* One write per line: O_APPEND keeps lines from several workers whole. A
     * failing log (disk full) is reported once a second, not per request. */
    if (!sb.failed && write(srv->access_fd, sb.p, sb.len) < 0 &&
        hc->hw->access_warned != hc->hw->date_sec) {
        hc->hw->access_warned = hc->hw->date_sec;
        log_warn(srv->name, "access log %s: %s", srv->access_log, strerror(errno));
    }
    sb_free(&sb);
}
