// Thread-spawn-heavy workload: create and join N threads; prints ns per create+join.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static void *nop(void *a) { return a; }
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) { pthread_t t; pthread_create(&t, NULL, nop, NULL); pthread_join(t, NULL); }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.0f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
