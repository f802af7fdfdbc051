// The one background thread that drops libvirt references which may be a
// connection's last: dropping that one closes the connection, a daemon round
// trip, which must never run on a JS thread nor on libvirt's event-loop thread
// (the round trip itself needs that loop).
#pragma once

#include <functional>

namespace lvb {

// Runs `release` on the release thread (started on first use), in order.
void ReleaseInBackground(std::function<void()> release);

}  // namespace lvb
