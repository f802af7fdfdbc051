// Positioned writes of a backup file that is written front to back, each on a libuv
// worker thread: the bytes are checksummed (XXH3-128) strictly in the order the writes
// were issued, written with pwritev, sent to the disk at once and, a window behind the
// writer, waited for and dropped from the page cache (what nbdcopy does). The JS thread
// only hands over buffers, so it stays free to receive the next ones; the final fsync
// finds almost nothing left to write; the output is never read back for its checksum.
// Given a descriptor opened with O_DIRECT, it writes the aligned writes (position,
// lengths and memory on 4 KiB) straight to the disk, with no copy into the page cache
// and no write-back to wait for, and the others through the page cache as above.
#pragma once

#include <napi.h>

namespace lvb {

Napi::Function InitFileWriter(Napi::Env env);

}  // namespace lvb
