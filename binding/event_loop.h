// libvirt's default event loop, run on one native thread for the whole process.
// It must be registered before the first connection opens: the remote driver
// uses it for keepalive, and domain events are dispatched from it.
#pragma once

namespace lvb {

// Idempotent and thread-safe: every environment that loads the addon calls it.
// Returns false (with libvirt's last error set) if registration failed.
bool EnsureEventLoop();

}  // namespace lvb
