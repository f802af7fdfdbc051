// Linked only into the portable prebuilt binaries (binding.gyp, portable_binary=1),
// which carry libstdc++ statically and must load on glibc versions older than the
// build machine's. Linking against a new glibc binds each call to the newest version
// of its symbol (pthread_create@GLIBC_2.34 since libpthread moved into libc), even
// when the same function has existed since the architecture's first glibc. The
// definitions below are hidden, so every reference inside the addon, libstdc++'s
// included, binds to them, and they forward to the architecture's base version of
// the symbol, which every glibc since then exports (older ones from libpthread.so.0
// and libdl.so.2, which the portable build lists as needed). Functions that have no
// older version are reimplemented the way libstdc++ does on a glibc without them.
// scripts/release/symbols.ts measures the result; the floor is in the README.

#include <dlfcn.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__)
#define LVB_GLIBC_BASE "GLIBC_2.2.5"
#define LVB_GLIBC_SETNAME "GLIBC_2.12"
#elif defined(__aarch64__)
#define LVB_GLIBC_BASE "GLIBC_2.17"
#define LVB_GLIBC_SETNAME "GLIBC_2.17"
#else
#error "portable builds are made for x86_64 and aarch64 only"
#endif

#define LVB_HIDDEN extern "C" __attribute__((visibility("hidden")))
#define LVB_BIND_OLD(local, name, version) __asm__(".symver " #local "," #name "@" version)

extern "C" {
int lvb_old_pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int lvb_old_pthread_detach(pthread_t);
int lvb_old_pthread_join(pthread_t, void**);
int lvb_old_pthread_once(pthread_once_t*, void (*)());
int lvb_old_pthread_key_create(pthread_key_t*, void (*)(void*));
int lvb_old_pthread_key_delete(pthread_key_t);
void* lvb_old_pthread_getspecific(pthread_key_t);
int lvb_old_pthread_setspecific(pthread_key_t, const void*);
int lvb_old_pthread_setname_np(pthread_t, const char*);
void* lvb_old_dlopen(const char*, int);
int lvb_old_dladdr(const void*, Dl_info*);
void* lvb_old_dlsym(void*, const char*);
int lvb_old_fcntl(int, int, ...);
}

LVB_BIND_OLD(lvb_old_pthread_create, pthread_create, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_detach, pthread_detach, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_join, pthread_join, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_once, pthread_once, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_key_create, pthread_key_create, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_key_delete, pthread_key_delete, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_getspecific, pthread_getspecific, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_setspecific, pthread_setspecific, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_pthread_setname_np, pthread_setname_np, LVB_GLIBC_SETNAME);
LVB_BIND_OLD(lvb_old_dlopen, dlopen, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_dladdr, dladdr, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_dlsym, dlsym, LVB_GLIBC_BASE);
LVB_BIND_OLD(lvb_old_fcntl, fcntl, LVB_GLIBC_BASE);

LVB_HIDDEN int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  return lvb_old_pthread_create(thread, attr, start, arg);
}
LVB_HIDDEN int pthread_detach(pthread_t thread) { return lvb_old_pthread_detach(thread); }
LVB_HIDDEN int pthread_join(pthread_t thread, void** result) { return lvb_old_pthread_join(thread, result); }
LVB_HIDDEN int pthread_once(pthread_once_t* once, void (*init)()) { return lvb_old_pthread_once(once, init); }
LVB_HIDDEN int pthread_key_create(pthread_key_t* key, void (*destructor)(void*)) {
  return lvb_old_pthread_key_create(key, destructor);
}
// libstdc++ asks for this alias to tell whether threads are in use; the name is glibc's.
// NOLINTNEXTLINE(bugprone-reserved-identifier)
LVB_HIDDEN int __pthread_key_create(pthread_key_t* key, void (*destructor)(void*)) {
  return lvb_old_pthread_key_create(key, destructor);
}
LVB_HIDDEN int pthread_key_delete(pthread_key_t key) { return lvb_old_pthread_key_delete(key); }
LVB_HIDDEN void* pthread_getspecific(pthread_key_t key) { return lvb_old_pthread_getspecific(key); }
// pthread.h declares that pthread_setspecific does not read `value`, which GCC
// then flags when the value is handed on.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
LVB_HIDDEN int pthread_setspecific(pthread_key_t key, const void* value) {
  return lvb_old_pthread_setspecific(key, value);
}
#pragma GCC diagnostic pop
LVB_HIDDEN int pthread_setname_np(pthread_t thread, const char* name) {
  return lvb_old_pthread_setname_np(thread, name);
}
LVB_HIDDEN void* dlopen(const char* file, int mode) { return lvb_old_dlopen(file, mode); }
LVB_HIDDEN int dladdr(const void* address, Dl_info* info) { return lvb_old_dladdr(address, info); }
LVB_HIDDEN void* dlsym(void* handle, const char* name) { return lvb_old_dlsym(handle, name); }

// glibc >= 2.28 headers turn fcntl() into fcntl64(); on 64-bit targets both take
// the same arguments, and every fcntl command's third argument fits a pointer.
LVB_HIDDEN int fcntl64(int fd, int command, ...) {
  __builtin_va_list args;
  __builtin_va_start(args, command);
  void* argument = __builtin_va_arg(args, void*);
  __builtin_va_end(args);
  return lvb_old_fcntl(fd, command, argument);
}

// glibc 2.30. What libstdc++ does without it: wait against the realtime clock
// for the same remaining time.
LVB_HIDDEN int pthread_cond_clockwait(pthread_cond_t* cond, pthread_mutex_t* mutex, clockid_t clock,
                                      const struct timespec* deadline) {
  if (clock == CLOCK_REALTIME) return pthread_cond_timedwait(cond, mutex, deadline);
  timespec now{};
  timespec wall{};
  clock_gettime(clock, &now);
  clock_gettime(CLOCK_REALTIME, &wall);
  int64_t remaining_ns = (static_cast<int64_t>(deadline->tv_sec) - now.tv_sec) * 1000000000 +
                         (static_cast<int64_t>(deadline->tv_nsec) - now.tv_nsec);
  if (remaining_ns < 0) remaining_ns = 0;
  int64_t wall_ns = static_cast<int64_t>(wall.tv_nsec) + remaining_ns % 1000000000;
  timespec wall_deadline{};
  wall_deadline.tv_sec = wall.tv_sec + static_cast<time_t>(remaining_ns / 1000000000 + wall_ns / 1000000000);
  wall_deadline.tv_nsec = static_cast<long>(wall_ns % 1000000000);
  return pthread_cond_timedwait(cond, mutex, &wall_deadline);
}

// glibc 2.32. Zero means "threads may exist": libstdc++ then always uses atomic
// reference counts, as it does on a glibc without the flag.
// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name, which libstdc++ reads.
LVB_HIDDEN char __libc_single_threaded;
char __libc_single_threaded = 0;  // NOLINT(bugprone-reserved-identifier)

// glibc 2.32. The errno names the addon reports as `code`; glibc's own table
// where it has one.
LVB_HIDDEN const char* strerrorname_np(int error) {
  using NameFn = const char* (*)(int);
  static const NameFn glibc_names = reinterpret_cast<NameFn>(dlsym(RTLD_DEFAULT, "strerrorname_np"));
  if (glibc_names != nullptr) return glibc_names(error);
  switch (error) {
#define LVB_ERRNO_NAME(e) \
  case e:                 \
    return #e;
    LVB_ERRNO_NAME(EPERM)
    LVB_ERRNO_NAME(ENOENT)
    LVB_ERRNO_NAME(EIO)
    LVB_ERRNO_NAME(EBADF)
    LVB_ERRNO_NAME(EAGAIN)
    LVB_ERRNO_NAME(ENOMEM)
    LVB_ERRNO_NAME(EACCES)
    LVB_ERRNO_NAME(EFAULT)
    LVB_ERRNO_NAME(EBUSY)
    LVB_ERRNO_NAME(EEXIST)
    LVB_ERRNO_NAME(EXDEV)
    LVB_ERRNO_NAME(ENODEV)
    LVB_ERRNO_NAME(ENOTDIR)
    LVB_ERRNO_NAME(EISDIR)
    LVB_ERRNO_NAME(EINVAL)
    LVB_ERRNO_NAME(ENFILE)
    LVB_ERRNO_NAME(EMFILE)
    LVB_ERRNO_NAME(EFBIG)
    LVB_ERRNO_NAME(ENOSPC)
    LVB_ERRNO_NAME(ESPIPE)
    LVB_ERRNO_NAME(EROFS)
    LVB_ERRNO_NAME(EPIPE)
    LVB_ERRNO_NAME(ENAMETOOLONG)
    LVB_ERRNO_NAME(ENOTEMPTY)
    LVB_ERRNO_NAME(EINTR)
    LVB_ERRNO_NAME(EOPNOTSUPP)
    LVB_ERRNO_NAME(EDQUOT)
    LVB_ERRNO_NAME(ESTALE)
#undef LVB_ERRNO_NAME
    default:
      return nullptr;
  }
}

// glibc 2.36, reached only through std::random_device, which the addon does not
// use; libstdc++'s archive links it in with the string code.
LVB_HIDDEN uint32_t arc4random() {
  uint32_t value = 0;
  if (getentropy(&value, sizeof value) != 0) std::abort();
  return value;
}
