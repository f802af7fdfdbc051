#include "event_loop.h"

#include <libvirt/libvirt.h>

#include <mutex>
#include <thread>

namespace lvb {

bool EnsureEventLoop() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    if (virEventRegisterDefaultImpl() < 0) return;
    ok = true;
    // Detached: a native thread does not keep Node's loop alive, so a process
    // with no pending work or listeners still exits.
    std::thread([] {
      for (;;) virEventRunDefaultImpl();
    }).detach();
  });
  return ok;
}

}  // namespace lvb
