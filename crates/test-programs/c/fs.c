// File-system probe: `fs read PATH`, `fs write PATH TEXT`, `fs ls DIR`.
// Prints "ok: ..." and exits 0 on success; prints "denied: PATH: <errno text>" and exits 1 on failure.
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *path) {
    printf("denied: %s: %s\n", path, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: fs read|write|ls PATH [TEXT]\n");
        return 2;
    }
    const char *op = argv[1], *path = argv[2];
    if (strcmp(op, "read") == 0) {
        FILE *f = fopen(path, "r");
        if (!f) return fail(path);
        static char buf[4096];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        printf("ok: %s\n", buf);
        return 0;
    }
    if (strcmp(op, "write") == 0 && argc > 3) {
        FILE *f = fopen(path, "w");
        if (!f) return fail(path);
        if (fputs(argv[3], f) < 0 || fclose(f) != 0) return fail(path);
        printf("ok: wrote %s\n", path);
        return 0;
    }
    if (strcmp(op, "ls") == 0) {
        DIR *d = opendir(path);
        if (!d) return fail(path);
        struct dirent *e;
        printf("ok:");
        while ((e = readdir(d))) printf(" %s", e->d_name);
        printf("\n");
        closedir(d);
        return 0;
    }
    fprintf(stderr, "unknown operation %s\n", op);
    return 2;
}
