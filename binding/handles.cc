#include "handles.h"

#include <cmath>

#include "errors.h"

namespace lvb {

void ConnectionState::CallEnded() {
  if (--callsInFlight_ > 0 || !whenIdle_) return;
  std::function<void()> next = std::move(whenIdle_);
  whenIdle_ = nullptr;
  next();
}

void ConnectionState::WhenIdle(std::function<void()> next) {
  if (callsInFlight_ == 0) {
    next();
    return;
  }
  whenIdle_ = std::move(next);
}

std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || !info[index].IsString()) {
    ThrowTypeError(info.Env(), std::string("The \"") + name + "\" argument must be a string");
  }
  std::string value = info[index].As<Napi::String>().Utf8Value();
  if (value.find('\0') != std::string::npos) {
    ThrowTypeError(info.Env(), std::string("The \"") + name + "\" argument must not contain NUL characters");
  }
  return value;
}

std::optional<std::string> OptionalStringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || info[index].IsUndefined() || info[index].IsNull()) return std::nullopt;
  return StringArg(info, index, name);
}

unsigned int FlagsArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || info[index].IsUndefined()) return 0;
  if (!info[index].IsNumber()) {
    ThrowTypeError(info.Env(), std::string("The \"") + name + "\" argument must be a number");
  }
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(value) || value < 0 || value > 4294967295.0 || std::floor(value) != value) {
    ThrowTypeError(info.Env(), std::string("The \"") + name + "\" argument must be an unsigned 32-bit integer, got " +
                                   std::to_string(value));
  }
  return static_cast<unsigned int>(value);
}

uint64_t ByteCountArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || info[index].IsUndefined()) return 0;
  if (!info[index].IsNumber()) {
    ThrowTypeError(info.Env(), std::string("The \"") + name + "\" argument must be a number");
  }
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(value) || value < 0 || value > 9007199254740991.0 || std::floor(value) != value) {
    ThrowTypeError(info.Env(), std::string("The \"") + name +
                                   "\" argument must be a whole number of bytes from 0 to 2^53 - 1, got " +
                                   std::to_string(value));
  }
  return static_cast<uint64_t>(value);
}

}  // namespace lvb
