// Copies stdin to stdout and reports the byte count on stderr.
#include <stdio.h>
int main(void) {
    static char buf[65536]; // static: the default wasm stack is only 64 KiB
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        fwrite(buf, 1, n, stdout);
        total += n;
    }
    fprintf(stderr, "copied %zu bytes\n", total);
    return 0;
}
