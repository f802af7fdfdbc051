// XXH3-128 hashing of byte ranges, for backup file checksums: fast enough to run on
// the JS thread while data streams through (tens of GB/s), and the same digest
// `xxhsum -H2` prints, so files can be checked without this library.
#pragma once

#include <napi.h>

namespace lvb {

Napi::Function InitXxh128(Napi::Env env);

}  // namespace lvb
