// Advisory whole-file locks (flock) for the backup set and per-domain run locks.
// The kernel drops a lock when its holder dies, however it dies, so a lock can
// never be left behind by a crash and no process ever has to guess whether the
// holder is still alive before taking it over.
#pragma once

#include <napi.h>

namespace lvb {

// tryLockFile(fd): true when this open file now holds the exclusive lock, false
// when another open file holds it. Non-blocking, so it answers at once and can
// stay on the JS thread.
Napi::Value TryLockFile(const Napi::CallbackInfo& info);

}  // namespace lvb
