#include "file_lock.h"

#include <sys/file.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "errors.h"

namespace lvb {

Napi::Value TryLockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"fd\" argument must be a file descriptor");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) ThrowTypeError(env, "The \"fd\" argument must be a file descriptor");
  int result;
  do {
    result = flock(fd, LOCK_EX | LOCK_NB);
  } while (result != 0 && errno == EINTR);
  if (result == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  int error = errno;
  Napi::Error failure = Napi::Error::New(env, std::string("flock: ") + std::strerror(error));
  failure.Set("errno", Napi::Number::New(env, -error));
  failure.Set("syscall", Napi::String::New(env, "flock"));
  // The names Node gives these errnos, so callers match them like any fs error.
  const char* code = error == ENOLCK ? "ENOLCK" : error == EBADF ? "EBADF" : error == EINVAL ? "EINVAL" : "EIO";
  failure.Set("code", Napi::String::New(env, code));
  throw failure;
}

}  // namespace lvb
