#include "exit_watchdog.h"

#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "errors.h"

namespace lvb {

Napi::Value ArmExitWatchdog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    ThrowTypeError(env, "armExitWatchdog(code, ms) takes two numbers");
  }
  int code = info[0].As<Napi::Number>().Int32Value();
  int64_t ms = info[1].As<Napi::Number>().Int64Value();
  if (code < 0 || code > 255) ThrowTypeError(env, "The \"code\" argument must be an exit code (0-255)");
  if (ms < 0) ThrowTypeError(env, "The \"ms\" argument must be >= 0");
  // Built now: the thread must not allocate once the process is tearing down.
  std::string line = "libvirt-backup: the process had not exited " + std::to_string(ms) +
                     " ms after its outcome was reported; ended with exit code " + std::to_string(code) + "\n";
  // Detached: a normal exit ends it with the process.
  std::thread([code, ms, line = std::move(line)] {
    pthread_setname_np(pthread_self(), "lvb-exit-guard");
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
    (void)ignored;
    _exit(code);
  }).detach();
  return env.Undefined();
}

}  // namespace lvb
