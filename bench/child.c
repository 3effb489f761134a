/* The supervised program of bench.rest, the same for node-agent and its baseline
 * (supervisord): a C program, so that its own start-up costs next to nothing.
 * BENCH_MODE says what it does, BENCH_FILE where it writes:
 *   stamp     write the wall-clock time (seconds) to BENCH_FILE, then wait
 *   quiet     wait (a worker with nothing to say)
 *   exit      append one byte to BENCH_FILE (a start counted), exit 75 (restart me)
 *   ignore    ignore SIGTERM and wait
 *   leftover  start a child that ignores SIGTERM, then wait (SIGTERM ends this one)
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    const char *mode = getenv("BENCH_MODE");
    const char *file = getenv("BENCH_FILE");
    if (mode == NULL) return 2;
    if (strcmp(mode, "stamp") == 0 && file != NULL) {
        struct timespec now;
        char text[64];
        clock_gettime(CLOCK_REALTIME, &now);
        int length = snprintf(text, sizeof text, "%lld.%09ld\n", (long long)now.tv_sec, now.tv_nsec);
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            (void)!write(fd, text, (size_t)length);
            close(fd);
        }
    } else if (strcmp(mode, "exit") == 0 && file != NULL) {
        int fd = open(file, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            (void)!write(fd, "x", 1);
            close(fd);
        }
        return 75;
    } else if (strcmp(mode, "ignore") == 0) {
        signal(SIGTERM, SIG_IGN);
    } else if (strcmp(mode, "leftover") == 0) {
        if (fork() == 0) {
            signal(SIGTERM, SIG_IGN);
            for (;;) pause();
        }
    }
    for (;;) pause();
}
