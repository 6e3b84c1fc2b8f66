// Allocates and touches argv[1] MiB in 1 MiB steps. Exits 0 when all of it was granted,
// 3 when an allocation failed (after printing how far it got).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char *volatile keep[4096]; // the allocations stay reachable, so the compiler cannot elide them

int main(int argc, char **argv) {
    int want = argc > 1 ? atoi(argv[1]) : 16;
    printf("memhog: allocating %d MiB\n", want);
    fflush(stdout);
    for (int i = 0; i < want && i < 4096; i++) {
        char *p = malloc(1 << 20);
        keep[i] = p;
        if (!p) {
            printf("allocation failed after %d MiB\n", i);
            return 3;
        }
        memset(p, 1, 1 << 20);
    }
    printf("allocated %d MiB\n", want);
    return 0;
}
