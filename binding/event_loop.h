// The process's libvirt event loop: our own implementation (see event_loop.cc for
// why not libvirt's default one), run on one native thread for the whole process.
// It must be registered before the first connection opens: the remote driver
// uses it for keepalive, and domain events are dispatched from it.
#pragma once

namespace lvb {

// Idempotent and thread-safe: every environment that loads the addon calls it.
// Returns 0, or the errno that kept the loop from starting.
int EnsureEventLoop();

}  // namespace lvb
