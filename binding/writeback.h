// Page-cache write-back of a file as it is written, the way nbdcopy does it: start
// writing each finished range to disk at once, then wait for it and drop it from the
// page cache a little later. A large backup then neither leaves gigabytes dirty for
// the final fsync nor pushes everything else out of the page cache.
#pragma once

#include <napi.h>

namespace lvb {

// startWriteback(fd, offset, length): Promise<void>, SYNC_FILE_RANGE_WRITE.
Napi::Value StartWriteback(const Napi::CallbackInfo& info);
// finishWriteback(fd, offset, length, evict): Promise<void>; waits for the range's
// write-back, then (evict) advises the kernel to drop its pages.
Napi::Value FinishWriteback(const Napi::CallbackInfo& info);

}  // namespace lvb
