#include "xxh128.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <new>
#include <string>

#include "errors.h"
#include "handles.h"

namespace lvb {

Xxh128State::Xxh128State() : state_(XXH3_createState()) {
  if (state_ == nullptr) throw std::bad_alloc();
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

Xxh128State::~Xxh128State() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Xxh128State::Update(const void* data, size_t length) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, length);
}

std::string Xxh128State::HexDigest() const {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(static_cast<const XXH3_state_t*>(state_)));
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(32);
  for (unsigned char byte : canonical.digest) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 15]);
  }
  return hex;
}

namespace {

class Xxh128Wrap : public Napi::ObjectWrap<Xxh128Wrap> {
 public:
  static constexpr const char* kClassName = "Xxh128";
  static constexpr napi_type_tag kTypeTag = {0x5f3c9a61d2e84b07ULL, 0x9b1e47c3a0d65f28ULL};

  explicit Xxh128Wrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Xxh128Wrap>(info) {
    if (!info.IsConstructCall()) ThrowTypeError(info.Env(), "Class constructor Xxh128 cannot be invoked without 'new'");
    info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  }

  // update(bytes: ArrayBufferView): hashes the bytes, in call order.
  Napi::Value Update(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsTypedArray()) {
      ThrowTypeError(info.Env(), "The \"bytes\" argument must be a Uint8Array or Buffer");
    }
    if (finished_) throw Napi::Error::New(info.Env(), "xxh128: update() after digest()");
    auto array = info[0].As<Napi::TypedArray>();
    state_.Update(static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset(), array.ByteLength());
    return info.Env().Undefined();
  }

  // digest(): the 128-bit hash as 32 lowercase hex digits, big-endian like xxhsum.
  Napi::Value Digest(const Napi::CallbackInfo& info) {
    if (finished_) throw Napi::Error::New(info.Env(), "xxh128: digest() called twice");
    finished_ = true;
    return Napi::String::New(info.Env(), state_.HexDigest());
  }

 private:
  Xxh128State state_;
  bool finished_ = false;
};

}  // namespace

Napi::Function InitXxh128(Napi::Env env) {
  return DefineCheckedClass<Xxh128Wrap>(env, {
                                                 MethodProperty<Xxh128Wrap, &Xxh128Wrap::Update>(env, "update"),
                                                 MethodProperty<Xxh128Wrap, &Xxh128Wrap::Digest>(env, "digest"),
                                             });
}

}  // namespace lvb
