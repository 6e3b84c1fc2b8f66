// Sleeps for argv[1] seconds inside a host call (poll_oneoff), then prints "awake".
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    sleep(argc > 1 ? atoi(argv[1]) : 100);
    printf("awake\n");
    return 0;
}
