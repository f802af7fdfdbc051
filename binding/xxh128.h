// XXH3-128 hashing of byte ranges, for backup file checksums: fast enough to run on
// the JS thread while data streams through (tens of GB/s), and the same digest
// `xxhsum -H2` prints, so files can be checked without this library.
#pragma once

#include <napi.h>

#include <cstddef>
#include <string>

namespace lvb {

// A running XXH3-128: bytes in, the digest as xxhsum prints it out. Shared by the
// JS-facing Xxh128 class and the FileWriter.
class Xxh128State {
 public:
  Xxh128State();  // throws std::bad_alloc
  ~Xxh128State();
  Xxh128State(const Xxh128State&) = delete;
  Xxh128State& operator=(const Xxh128State&) = delete;

  void Update(const void* data, size_t length);
  // 32 lowercase hex digits, big-endian (canonical form).
  std::string HexDigest() const;

 private:
  void* state_;  // XXH3_state_t, kept out of this header
};

Napi::Function InitXxh128(Napi::Env env);

}  // namespace lvb
