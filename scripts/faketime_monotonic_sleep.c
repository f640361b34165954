/*
 * Preloaded before libfaketime by scripts/test for its year-ahead pass, only where needed.
 *
 * libfaketime 0.9.10 (Debian 12) shifts the deadline of clock_nanosleep(CLOCK_MONOTONIC,
 * TIMER_ABSTIME) by the fake offset even when the monotonic clock is not faked
 * (FAKETIME_DONT_FAKE_MONOTONIC=1), so the kernel gets a negative time and answers EINVAL:
 * every time.sleep() of Python >= 3.11 fails. Fixed in libfaketime 0.9.11 (upstream issue
 * #426). The monotonic clock is real here, so its sleeps go to the kernel untouched;
 * wall-clock sleeps still go through libfaketime.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *req,
                    struct timespec *rem)
{
    if (clock_id == CLOCK_MONOTONIC) {
        /* clock_nanosleep returns the error number instead of setting errno. */
        return syscall(SYS_clock_nanosleep, clock_id, flags, req, rem) == 0 ? 0 : errno;
    }
    clock_nanosleep_fn next = (clock_nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    return next == NULL ? ENOSYS : next(clock_id, flags, req, rem);
}
