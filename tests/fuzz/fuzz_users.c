/*
 * The users file parser (core/users.c): the input is the file, loaded with
 * users_load as HTTP's auth handler and FTP load theirs. A file that loads
 * must find each of its users by name; verifying a password runs for the
 * hashes medusa computes itself ({SHA}, apr1) and traditional DES, not for
 * libcrypt's costly kinds (a cost the file's writer chose).
 */
#include "harness.h"

#include "core/users.h"

#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *path;
static struct crypt_data *cd;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_init();
    path = strdup(fz_path(0, "users"));
    cd = calloc(1, sizeof *cd);
    return 0;
}

static int cheap(const char *hash)
{
    return strncmp(hash, "{SHA}", 5) == 0 || strncmp(hash, "$apr1$", 6) == 0 || hash[0] != '$';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "w");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    char err[512] = "";
    struct cfg_ctx ctx = {.file = "fuzz.conf", .dir = "/srv", .err = err, .errlen = sizeof err};
    struct users u;
    if (users_load(&ctx, NULL, path, &u) == 0) {
        for (size_t i = 0; i < u.n; i++) {
            if (users_find(&u, u.v[i].name) != &u.v[i])
                abort();
            if (u.v[i].home && u.v[i].home[0] != '/')
                abort(); /* homes are absolute once loaded */
            if (cheap(u.v[i].hash))
                users_verify(&u, u.v[i].name, "secret", cd);
        }
        if (u.n && cheap(u.v[0].hash))
            users_verify(&u, "no such user", "secret", cd);
        users_free(&u);
    } else if (!err[0]) {
        abort(); /* a refusal says why */
    }
    return 0;
}
