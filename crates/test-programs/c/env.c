// Prints the whole environment, one KEY=VALUE per line, then a marker line.
#include <stdio.h>
extern char **environ;
int main(void) {
    for (char **e = environ; e && *e; e++) printf("%s\n", *e);
    printf("-- end of environment\n");
    return 0;
}
