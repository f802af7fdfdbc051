#include "zstd_clusters.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "errors.h"

namespace lvb {

namespace {

// Largest cluster qcow2 allows (2 MiB): bounds what one call may ask for.
constexpr double kMaxClusterSize = 2 * 1024 * 1024;

struct CompressContextFree {
  void operator()(ZSTD_CCtx* context) const { ZSTD_freeCCtx(context); }
};
struct DecompressContextFree {
  void operator()(ZSTD_DCtx* context) const { ZSTD_freeDCtx(context); }
};

// One context per pool thread, made on first use: a context costs more to create than
// a cluster costs to compress.
ZSTD_CCtx* ThreadCompressContext() {
  thread_local std::unique_ptr<ZSTD_CCtx, CompressContextFree> context(ZSTD_createCCtx());
  return context.get();
}

ZSTD_DCtx* ThreadDecompressContext() {
  thread_local std::unique_ptr<ZSTD_DCtx, DecompressContextFree> context(ZSTD_createDCtx());
  return context.get();
}

struct Input {
  const uint8_t* data;
  size_t length;
};

std::vector<Input> HoldInputs(const Napi::Array& arrays, std::vector<Napi::ObjectReference>* held) {
  std::vector<Input> inputs;
  inputs.reserve(arrays.Length());
  for (uint32_t i = 0; i < arrays.Length(); i++) {
    auto array = arrays.Get(i).As<Napi::TypedArray>();
    held->push_back(Napi::Persistent(array.As<Napi::Object>()));
    inputs.push_back(
        {static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset(), array.ByteLength()});
  }
  return inputs;
}

class CodecWorker : public Napi::AsyncWorker {
 public:
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  CodecWorker(Napi::Env env, const char* name, std::vector<Napi::ObjectReference> held)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), held_(std::move(held)) {}

  virtual Napi::Value Result(Napi::Env env) = 0;

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& error) {
      deferred_.Reject(error.Value());
    }
  }

  void OnError(const Napi::Error& error) override {
    try {
      deferred_.Reject(error.Value());
    } catch (const Napi::Error&) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> held_;  // the inputs stay alive while the worker reads them
};

class CompressWorker final : public CodecWorker {
 public:
  CompressWorker(Napi::Env env, std::vector<Napi::ObjectReference> held, std::vector<Input> inputs, int level,
                 uint8_t* output, size_t outputLength)
      : CodecWorker(env, "zstdCompressClusters", std::move(held)),
        inputs_(std::move(inputs)),
        level_(level),
        output_(output),
        outputLength_(outputLength) {}

 protected:
  void Execute() override {
    ZSTD_CCtx* context = ThreadCompressContext();
    if (context == nullptr) return SetError("zstd: out of memory for a compression context");
    ZSTD_CCtx_reset(context, ZSTD_reset_session_and_parameters);
    size_t status = ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level_);
    if (ZSTD_isError(status)) return SetError(std::string("zstd: ") + ZSTD_getErrorName(status));
    lengths_.assign(inputs_.size(), 0);
    size_t at = 0;
    for (size_t i = 0; i < inputs_.size(); i++) {
      const Input& input = inputs_[i];
      if (input.length == 0) continue;
      // One byte short of the cluster: a frame that does not fit is not worth storing.
      size_t room = std::min(input.length - 1, outputLength_ - at);
      size_t written = ZSTD_compress2(context, output_ + at, room, input.data, input.length);
      if (ZSTD_isError(written)) {
        if (ZSTD_getErrorCode(written) != ZSTD_error_dstSize_tooSmall)
          return SetError(std::string("zstd: ") + ZSTD_getErrorName(written));
        ZSTD_CCtx_reset(context, ZSTD_reset_session_only);
        continue;
      }
      lengths_[i] = written;
      at += written;
    }
  }

  // The frames' lengths, 0 for a cluster stored plain: numbers, so that a batch leaves
  // no memory behind for the collector.
  Napi::Value Result(Napi::Env env) override {
    Napi::Array results = Napi::Array::New(env, lengths_.size());
    for (uint32_t i = 0; i < lengths_.size(); i++)
      results.Set(i, Napi::Number::New(env, static_cast<double>(lengths_[i])));
    return results;
  }

 private:
  std::vector<Input> inputs_;
  int level_;
  uint8_t* output_;
  size_t outputLength_;
  std::vector<size_t> lengths_;
};

class DecompressWorker final : public CodecWorker {
 public:
  DecompressWorker(Napi::Env env, std::vector<Napi::ObjectReference> held, Input input, size_t clusterSize)
      : CodecWorker(env, "zstdDecompressCluster", std::move(held)), input_(input), output_(clusterSize) {}

 protected:
  void Execute() override {
    ZSTD_DCtx* context = ThreadDecompressContext();
    if (context == nullptr) return SetError("zstd: out of memory for a decompression context");
    ZSTD_DCtx_reset(context, ZSTD_reset_session_only);
    ZSTD_inBuffer in = {input_.data, input_.length, 0};
    ZSTD_outBuffer out = {output_.data(), output_.size(), 0};
    size_t status = 1;
    // The frame may be followed by other bytes: stop once the cluster is full.
    while (out.pos < out.size) {
      size_t before = in.pos + out.pos;
      status = ZSTD_decompressStream(context, &out, &in);
      if (ZSTD_isError(status)) return SetError(std::string("not a valid zstd frame: ") + ZSTD_getErrorName(status));
      if (status == 0 || in.pos + out.pos == before) break;
    }
    if (out.pos != out.size) {
      return SetError("the zstd frame gives " + std::to_string(out.pos) + " bytes, not one cluster of " +
                      std::to_string(out.size));
    }
    // A frame that would give more than one cluster is damaged.
    if (status != 0) {
      uint8_t extra = 0;
      ZSTD_outBuffer more = {&extra, 1, 0};
      status = ZSTD_decompressStream(context, &more, &in);
      if (ZSTD_isError(status) || more.pos > 0 || status != 0)
        return SetError("the zstd frame does not end after one cluster of " + std::to_string(out.size) + " bytes");
    }
  }

  Napi::Value Result(Napi::Env env) override {
    return Napi::Buffer<uint8_t>::Copy(env, output_.data(), output_.size());
  }

 private:
  Input input_;
  std::vector<uint8_t> output_;
};

}  // namespace

Napi::Value ZstdCompressClusters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray())
    ThrowTypeError(env, "The \"clusters\" argument must be an array of Uint8Arrays");
  if (info.Length() < 2 || !info[1].IsNumber()) ThrowTypeError(env, "The \"level\" argument must be a number");
  auto arrays = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < arrays.Length(); i++) {
    Napi::Value value = arrays.Get(i);
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().ByteLength() > kMaxClusterSize)
      ThrowTypeError(env, "The \"clusters\" argument must be an array of Uint8Arrays of at most 2 MiB");
  }
  if (info.Length() < 3 || !info[2].IsTypedArray()) ThrowTypeError(env, "The \"output\" argument must be a Uint8Array");
  double level = info[1].As<Napi::Number>().DoubleValue();
  if (!(level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel()) ||
      level != static_cast<double>(static_cast<int>(level))) {
    ThrowTypeError(env, "The \"level\" argument must be a whole number from " + std::to_string(ZSTD_minCLevel()) +
                            " to " + std::to_string(ZSTD_maxCLevel()));
  }
  std::vector<Napi::ObjectReference> held;
  std::vector<Input> inputs = HoldInputs(arrays, &held);
  auto output = info[2].As<Napi::TypedArray>();
  held.push_back(Napi::Persistent(output.As<Napi::Object>()));
  auto* outputData = static_cast<uint8_t*>(output.ArrayBuffer().Data()) + output.ByteOffset();
  // An AsyncWorker deletes itself once its completion has run.
  auto* worker = new CompressWorker(env, std::move(held), std::move(inputs), static_cast<int>(level), outputData,
                                    output.ByteLength());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;  // NOLINT(clang-analyzer-cplusplus.NewDeleteLeaks): the worker is queued, not leaked
}

Napi::Value ZstdDecompressCluster(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) ThrowTypeError(env, "The \"frame\" argument must be a Uint8Array");
  if (info.Length() < 2 || !info[1].IsNumber()) ThrowTypeError(env, "The \"clusterSize\" argument must be a number");
  double clusterSize = info[1].As<Napi::Number>().DoubleValue();
  if (!(clusterSize >= 1 && clusterSize <= kMaxClusterSize) ||
      clusterSize != static_cast<double>(static_cast<int64_t>(clusterSize))) {
    ThrowTypeError(env, "The \"clusterSize\" argument must be a whole number from 1 to 2097152");
  }
  std::vector<Napi::ObjectReference> held;
  Napi::Array one = Napi::Array::New(env, 1);
  one.Set(0u, info[0]);
  std::vector<Input> inputs = HoldInputs(one, &held);
  auto* worker = new DecompressWorker(env, std::move(held), inputs[0], static_cast<size_t>(clusterSize));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;  // NOLINT(clang-analyzer-cplusplus.NewDeleteLeaks): the worker is queued, not leaked
}

}  // namespace lvb
