/* Users files; see users.h. */
#include "core/users.h"

#include "core/config.h"

#include <crypt.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_perms(char *list, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"read", USER_READ},
                 {"write", USER_WRITE},
                 {"delete", USER_DELETE},
                 {"mkdir", USER_MKDIR},
                 {"rename", USER_RENAME}};
    *out = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        tok += strspn(tok, " ");
        tok[strcspn(tok, " ")] = '\0';
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] && strcmp(names[i].name, tok) != 0)
            i++;
        if (i == sizeof names / sizeof names[0])
            return -1;
        *out |= names[i].bit;
    }
    return 0;
}

static int add_user(struct users *u, const char *name, const char *hash, char *home, unsigned perms)
{
    struct user *v = realloc(u->v, (u->n + 1) * sizeof *v);
    if (!v) {
        free(home);
        return -1;
    }
    u->v = v;
    v[u->n] = (struct user){strdup(name), strdup(hash), home, perms};
    u->n++;
    return v[u->n - 1].name && v[u->n - 1].hash ? 0 : -1;
}

/* A hash of the same kind as the first user's, for unknown names. */
static char *make_dummy(const struct users *u)
{
    char prefix[8] = "$y$";
    if (u->n && u->v[0].hash[0] == '$') {
        const char *end = strchr(u->v[0].hash + 1, '$');
        if (end && end - u->v[0].hash < (long)sizeof prefix - 1)
            snprintf(prefix, sizeof prefix, "%.*s", (int)(end - u->v[0].hash + 1), u->v[0].hash);
    }
    struct crypt_data *cd = calloc(1, sizeof *cd);
    const char *setting =
        cd ? crypt_gensalt_rn(prefix, 0, NULL, 0, cd->output, sizeof cd->output) : NULL;
    const char *dummy = setting ? crypt_r("medusa-dummy", setting, cd) : NULL;
    char *out = strdup(dummy && dummy[0] != '*' ? dummy : "*");
    free(cd);
    return out;
}

int users_load(struct cfg_ctx *ctx, const void *at, const char *path, struct users *out)
{
    const config_setting_t *where = at;
    *out = (struct users){0};
    FILE *f = fopen(path, "re");
    if (!f)
        return cfg_error(ctx, where, "cannot open users file %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        char *fields[4] = {line, NULL, NULL, NULL};
        for (int i = 1; i < 4; i++) {
            char *colon = strchr(fields[i - 1], ':');
            if (!colon)
                break;
            *colon = '\0';
            fields[i] = colon + 1;
        }
        if (!fields[0][0] || !fields[1] || !fields[1][0]) {
            rc = cfg_error(ctx, where, "%s:%d: expected name:hash[:home[:permissions]]", path,
                           lineno);
            break;
        }
        unsigned perms = USER_READ;
        if (fields[3] && fields[3][0] && parse_perms(fields[3], &perms) < 0) {
            rc = cfg_error(ctx, where,
                           "%s:%d: permissions are a comma list of read, write, delete, mkdir, "
                           "rename",
                           path, lineno);
            break;
        }
        char *home = NULL;
        if (fields[2] && fields[2][0] && !(home = cfg_path(ctx, fields[2]))) {
            rc = cfg_error(ctx, where, "out of memory");
            break;
        }
        if (users_find(out, fields[0])) {
            free(home);
            rc = cfg_error(ctx, where, "%s:%d: user '%s' appears twice", path, lineno, fields[0]);
            break;
        }
        if (add_user(out, fields[0], fields[1], home, perms) < 0)
            rc = cfg_error(ctx, where, "out of memory");
    }
    if (line)
        OPENSSL_cleanse(line, cap);
    free(line);
    fclose(f);
    if (rc == 0 && !(out->dummy_hash = make_dummy(out)))
        rc = cfg_error(ctx, where, "out of memory");
    return rc;
}

void users_free(struct users *u)
{
    for (size_t i = 0; i < u->n; i++) {
        free(u->v[i].name);
        free(u->v[i].hash);
        free(u->v[i].home);
    }
    free(u->v);
    free(u->dummy_hash);
    *u = (struct users){0};
}

const struct user *users_find(const struct users *u, const char *name)
{
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->v[i].name, name) == 0)
            return &u->v[i];
    return NULL;
}

const struct user *users_verify(const struct users *u, const char *name, const char *pass,
                                struct crypt_data *cd)
{
    const struct user *found = users_find(u, name);
    const char *hash = found ? found->hash : u->dummy_hash ? u->dummy_hash : "*";
    const char *out = crypt_r(pass, hash, cd);
    size_t hl = strlen(hash);
    int ok =
        found && out && out[0] != '*' && strlen(out) == hl && CRYPTO_memcmp(out, hash, hl) == 0;
    return ok ? found : NULL;
}
