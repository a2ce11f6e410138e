/* A C program the factory cross-compiles: built on this machine for each
   platform, it reports the machine it runs on. */
#include <stdio.h>
#include <sys/utsname.h>

int main(void) {
    struct utsname u;
    if (uname(&u) != 0) {
        perror("uname");
        return 1;
    }
    printf("hello from C on %s\n", u.machine);
    return 0;
}
