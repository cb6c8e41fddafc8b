/* bench_ingest part 3: every flush to disk waits SLOW_FLUSH_MS (default 10) first, as on an
 * SD card, where each fsync is a journal commit that takes milliseconds. Loaded into the
 * measured commands with LD_PRELOAD; built by the benchmark with the C compiler. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void wait_flush(void) {
    const char *value = getenv("SLOW_FLUSH_MS");
    long ms = value ? atol(value) : 10;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

#define WRAP_FD(name)                                                 \
    int name(int fd) {                                                \
        static int (*real)(int);                                      \
        if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, #name);      \
        wait_flush();                                                 \
        return real(fd);                                              \
    }

WRAP_FD(fsync)
WRAP_FD(fdatasync)
WRAP_FD(syncfs)

void sync(void) {
    static void (*real)(void);
    if (!real) real = (void (*)(void))dlsym(RTLD_NEXT, "sync");
    wait_flush();
    real();
}
