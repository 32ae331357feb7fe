/*
 * HTTP: raw bytes from a client, through the real connection code, llhttp,
 * the router and a handler chain, to the response. The configuration is
 * loaded by config_load from a temporary folder: a docroot with files,
 * a folder listing, a precompressed file and a symlink out of the root;
 * status, put (an upload folder emptied after every input), auth (Basic,
 * a users file), redirect and static handlers, and a second virtual host.
 * Each input is one connection (a socketpair handed to the worker as an
 * accepted connection): sent, run until idle, half-closed, closed.
 */
#include "harness.h"

#include "core/worker.h"

#include <stdio.h>
#include <stdlib.h>

static struct worker *w;

static const char conf[] =
    "workers = 1;\n"
    "http = ( { name = \"web\"; listen = [ \"127.0.0.1:1\" ];\n"
    "  access_log = \"/dev/null\"; max_body = 100000; max_uri = 2048;\n"
    "  max_header_size = 4096; max_headers = 32; keepalive_requests = 50;\n"
    "  vhosts = (\n"
    "    { names = [ \"redirect.example\" ]; handlers = (\n"
    "      { type = \"redirect\"; path = \"/\"; to_https = true; } ); },\n"
    "    { names = [ \"*\" ]; handlers = (\n"
    "      { type = \"status\"; path = \"/status\"; metrics_path = \"/metrics\"; },\n"
    "      { type = \"put\"; path = \"/upload/\"; root = \"uploads\"; max_size = 50000; },\n"
    "      { type = \"auth\"; path = \"/private/\"; realm = \"Staff\"; users = \"users\"; },\n"
    "      { type = \"redirect\"; path = \"/r/\"; pattern = \"^/r/([0-9]+)$\"; to = \"/n/$1\"; },\n"
    "      { type = \"redirect\"; path = \"/old\"; to = \"/new\"; status = 301; keep_query = true; "
    "},\n"
    "      { type = \"static\"; path = \"/docs/\"; root = \"www/docs\"; listing = true; },\n"
    "      { type = \"static\"; path = \"/\"; root = \"www\"; index = [ \"index.html\" ];\n"
    "        gzip_static = true; }\n"
    "    ); } ); } );\n";

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    fz_mkdir("www");
    fz_mkdir("www/docs");
    fz_mkdir("www/docs/sub");
    fz_mkdir("www/private");
    fz_mkdir("uploads");
    fz_mkdir("outside");
    fz_write("www/index.html", "<html><body>hello</body></html>\n");
    fz_write("www/style.css", "body { color: black; }\n");
    fz_write("www/big.txt", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"
                            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n");
    fz_write("www/a.js", "var a = 1;\n");
    fz_write("www/a.js.gz", "\x1f\x8b not really gzip\n");
    fz_write("www/docs/README.txt", "docs\n");
    fz_write("www/docs/a b.txt", "spaces\n");
    fz_write("www/docs/<x>&.html", "escaping\n");
    fz_write("www/private/p.txt", "private\n");
    fz_write("outside/secret.txt", "must never be served\n");
    fz_symlink("../outside", "www/out");
    fz_symlink("../../outside/secret.txt", "www/docs/secret.txt");
    /* alice:secret ({SHA}, cheap to verify), bob:builder (sha256crypt, 1000 rounds) */
    fz_write("users", "# web users\n"
                      "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"
                      "bob:$5$rounds=1000$salt$/pt2TV8fl5xcbykULynWscRtnzs6v3Y3nPWeE1iEul3\n");
    w = fz_worker(fz_config("medusa.conf", conf));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_session(w, "web", 0, NULL, data, size, NULL, NULL, NULL);
    /* every input starts with an empty upload folder */
    fz_empty("uploads");
    return 0;
}
