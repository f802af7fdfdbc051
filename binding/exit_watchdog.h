// A bound on the time a process takes to exit once it has decided to. Exiting runs
// the atexit handlers and library destructors while this addon's threads (libvirt's
// event loop, call threads, the release thread) still run; a command that has
// reported its outcome must end with that outcome, not wait forever on one of them.
#pragma once

#include <napi.h>

namespace lvb {

// armExitWatchdog(code, ms): starts a thread that, unless the process has exited by
// then, writes one line to stderr after `ms` and ends the process with `_exit(code)`.
Napi::Value ArmExitWatchdog(const Napi::CallbackInfo& info);

}  // namespace lvb
