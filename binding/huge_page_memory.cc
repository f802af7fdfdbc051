#include "huge_page_memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "errors.h"

namespace lvb {

namespace {

constexpr size_t kHugePage = 2 * 1024 * 1024;
// Largest mapping asked for at once: a guard against a length no caller means.
constexpr double kMaxBytes = 1024.0 * 1024 * 1024;

struct Mapping {
  void* base;
  size_t length;
};

}  // namespace

Napi::Value HugePageMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"bytes\" argument must be a number");
  double wanted = info[0].As<Napi::Number>().DoubleValue();
  if (!(wanted >= 1 && wanted <= kMaxBytes) || wanted != static_cast<double>(static_cast<size_t>(wanted))) {
    ThrowTypeError(env, "The \"bytes\" argument must be an integer from 1 to 1 GiB, not " + std::to_string(wanted));
  }
  size_t length = (static_cast<size_t>(wanted) + kHugePage - 1) / kHugePage * kHugePage;
  // Mapped with a huge page's worth to spare, then trimmed to a 2 MiB boundary: mmap
  // itself only promises 4 KiB alignment.
  size_t reserved = length + kHugePage;
  void* raw = mmap(nullptr, reserved, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    int error = errno;
    Napi::Error failure = Napi::Error::New(env, std::string("mmap: ") + std::strerror(error));
    failure.Set("code", Napi::String::New(env, error == ENOMEM ? "ENOMEM" : "EIO"));
    throw failure;
  }
  auto* start = static_cast<char*>(raw);
  size_t lead = (kHugePage - reinterpret_cast<uintptr_t>(raw) % kHugePage) % kHugePage;
  char* base = start + lead;
  if (lead > 0) munmap(start, lead);
  size_t tail = reserved - lead - length;
  if (tail > 0) munmap(base + length, tail);
  // Advice only: a kernel without transparent huge pages says EINVAL and 4 KiB pages serve.
  madvise(base, length, MADV_HUGEPAGE);
  auto* mapping = new Mapping{base, length};
  return Napi::ArrayBuffer::New(
      env, base, length,
      [](Napi::Env, void*, Mapping* owned) {
        munmap(owned->base, owned->length);
        delete owned;
      },
      mapping);
}

}  // namespace lvb
