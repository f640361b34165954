/*
 * Preloaded before libfaketime by scripts/test for its year-ahead pass, only where needed.
 *
 * libfaketime 0.9.10 (Debian 12) shifts absolute deadlines on the monotonic clock by the fake
 * offset even when that clock is not faked (FAKETIME_DONT_FAKE_MONOTONIC=1); both fixed in
 * libfaketime 0.9.11 (upstream issue #426 and the pthread_cond_timedwait fixes):
 * - clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) gets a negative time and fails with
 *   EINVAL: every time.sleep() of Python >= 3.11;
 * - pthread_cond_timedwait on a monotonic condition variable times out at once: Python's
 *   GIL then changes hands on every check, and threaded code runs several times slower.
 * The monotonic clock is real here, so its waits go to the C library untouched; wall-clock
 * waits still go through libfaketime.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);
typedef int (*cond_timedwait_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);

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

/* A deadline within a day of the real monotonic clock is a monotonic one: wall-clock
 * deadlines are decades away from it (seconds since 1970, against seconds since boot). */
static int is_monotonic_deadline(const struct timespec *abstime)
{
    struct timespec now;
    if (abstime == NULL || syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &now) != 0) {
        return 0;
    }
    long long diff = (long long)abstime->tv_sec - (long long)now.tv_sec;
    return diff > -86400 && diff < 86400;
}

int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                           const struct timespec *abstime)
{
    static cond_timedwait_fn libc_wait, next_wait;
    if (is_monotonic_deadline(abstime)) {
        if (libc_wait == NULL) {
            void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
            libc_wait = libc == NULL ? NULL : (cond_timedwait_fn)dlvsym(
                libc, "pthread_cond_timedwait", "GLIBC_2.3.2");
        }
        if (libc_wait != NULL) {
            return libc_wait(cond, mutex, abstime);
        }
    }
    if (next_wait == NULL) {
        next_wait = (cond_timedwait_fn)dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    }
    return next_wait == NULL ? ENOSYS : next_wait(cond, mutex, abstime);
}
