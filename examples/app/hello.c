#include <stdio.h>
#include <string.h>

#ifndef VERSION
#define VERSION "dev"
#endif

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--check") == 0) {
        return 0;
    }
    printf("hello from kiln %s\n", VERSION);
    return 0;
}
