#include "stream.h"

#include <algorithm>
#include <climits>
#include <vector>

#include "addon.h"
#include "connection.h"
#include "errors.h"
#include "release_thread.h"
#include "worker.h"

namespace lvb {

namespace {

// Bytes handed to one virStreamSend, which sends them as one message of libvirt's
// RPC protocol. 256 KiB is the largest message the daemon takes cheaply, and what
// libvirt's own clients send: above it, the daemon's memory for each message is more
// often fresh from the kernel (twice the page faults at 512 KiB). A 2 GiB upload into a
// pool over the unix socket took 4.5-4.8 s in 1 MiB messages (the daemon's CPU 3.8-4.1
// s), 1.9 s in 256 KiB ones (1.2-1.3 s), 2.3 s in 128 KiB ones.
constexpr size_t kPacketBytes = 256 * 1024;

// The buffers of one send or receive, kept alive (and unmoved) until it completes.
// Created and destroyed on the JS thread.
using HeldBuffers = std::shared_ptr<std::vector<Napi::ObjectReference>>;

struct Piece {
  const char* data;
  size_t length;
};

Napi::Value UndefinedResult(Napi::Env env, int) { return env.Undefined(); }

}  // namespace

StreamLife::~StreamLife() {
  if (transferring.load()) virStreamAbort(st);
  virStreamFree(st);
  virResetLastError();
}

const napi_type_tag StreamWrap::kTypeTag = {0x6c766273'74726561ULL, 0x6d000000'00000005ULL};

Napi::Function StreamWrap::Init(Napi::Env env) {
  using W = StreamWrap;
  return DefineCheckedClass<W>(env, {
                                        MethodProperty<W, &W::Send>(env, "send"),
                                        MethodProperty<W, &W::SendHole>(env, "sendHole"),
                                        MethodProperty<W, &W::Recv>(env, "recv"),
                                        MethodProperty<W, &W::Finish>(env, "finish"),
                                        MethodProperty<W, &W::Abort>(env, "abort"),
                                    });
}

Napi::Value StreamWrap::New(Napi::Env env, Napi::Object connection, unsigned int flags) {
  if (flags & VIR_STREAM_NONBLOCK) {
    ThrowTypeError(env, "non-blocking streams are not supported: stream calls run on worker threads instead");
  }
  ConnectionWrap* conn = ConnectionWrap::Unwrap(connection);
  if (conn->state()->closed) throw MakeLibvirtError(env, ClosedConnectionError("virStreamNew"));
  virStreamPtr st = virStreamNew(conn->state()->conn.get(), flags);
  if (st == nullptr) throw MakeLibvirtError(env, CaptureLastError("virStreamNew"));
  // The deleter runs wherever the last owner lets go; the work goes to the release thread.
  auto* life =
      new StreamLifePtr(new StreamLife(st), [](StreamLife* dying) { ReleaseInBackground([dying] { delete dying; }); });
  std::unique_ptr<StreamLifePtr> owner(life);
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->streamClass.New({Napi::External<StreamLifePtr>::New(env, owner.get()), connection});
}

StreamWrap::StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsObject() ||
      !info[1].As<Napi::Object>().CheckTypeTag(&ConnectionWrap::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: streams come from a Connection");
  }
  Napi::Object connection = info[1].As<Napi::Object>();
  state_ = ConnectionWrap::Unwrap(connection)->state();
  connection_ = Napi::Persistent(connection);
  life_ = std::move(*info[0].As<Napi::External<StreamLifePtr>>().Data());
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  state_->children.insert(this);
}

StreamWrap::~StreamWrap() { state_->children.erase(this); }

// Calls in flight keep their own share; the last one out aborts and frees the stream.
void StreamWrap::ReleaseForClose() { life_.reset(); }

template <typename T>
Napi::Value StreamWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                              std::function<bool(StreamLife&, T&)> work,
                              std::function<Napi::Value(Napi::Env, T)> convert) {
  Napi::Env env = info.Env();
  if (state_->closed || !life_) return RejectedPromise(env, ClosedConnectionError(operation));
  StreamLifePtr life = life_;
  return LibvirtCall<T>::Run(
      env, info.This().As<Napi::Object>(), state_.get(), operation, HeldReference(),
      [life, work = std::move(work)](T& out) { return work(*life, out); }, std::move(convert), state_);
}

namespace {

// Reads an array of typed arrays into pieces, holding each until the call ends.
std::vector<Piece> BufferPieces(const Napi::CallbackInfo& info, size_t index, const HeldBuffers& held) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsArray()) {
    ThrowTypeError(env, "The \"buffers\" argument must be an array of Uint8Arrays");
  }
  auto buffers = info[index].As<Napi::Array>();
  std::vector<Piece> pieces;
  for (uint32_t i = 0; i < buffers.Length(); i++) {
    Napi::Value value = buffers.Get(i);
    if (!value.IsTypedArray()) ThrowTypeError(env, "The \"buffers\" argument must be an array of Uint8Arrays");
    auto array = value.As<Napi::TypedArray>();
    held->push_back(Napi::Persistent(array.As<Napi::Object>()));
    const char* data = static_cast<const char*>(array.ArrayBuffer().Data()) + array.ByteOffset();
    if (array.ByteLength() > 0) pieces.push_back({data, array.ByteLength()});
  }
  return pieces;
}

struct Received {
  size_t bytes = 0;
  long long hole = 0;
  bool end = false;
};

}  // namespace

// send(buffers: Uint8Array[]): Promise<number>; every byte is sent before it resolves.
Napi::Value StreamWrap::Send(const Napi::CallbackInfo& info) {
  auto held = std::make_shared<std::vector<Napi::ObjectReference>>();
  std::vector<Piece> pieces = BufferPieces(info, 0, held);
  return Async<double>(
      info, "virStreamSend",
      [held, pieces](StreamLife& life, double& sent) {
        for (const Piece& piece : pieces) {
          for (size_t done = 0; done < piece.length;) {
            int n = virStreamSend(life.st, piece.data + done, std::min(piece.length - done, kPacketBytes));
            if (n < 0) return false;
            done += static_cast<size_t>(n);
            sent += n;
          }
        }
        return true;
      },
      [](Napi::Env env, double sent) -> Napi::Value { return Napi::Number::New(env, sent); });
}

// sendHole(length, flags): the receiver skips `length` bytes (sparse streams only).
Napi::Value StreamWrap::SendHole(const Napi::CallbackInfo& info) {
  uint64_t length = ByteCountArg(info, 0, "length");
  unsigned int flags = FlagsArg(info, 1);
  return Async<int>(
      info, "virStreamSendHole",
      [length, flags](StreamLife& life, int&) {
        return virStreamSendHole(life.st, static_cast<long long>(length), flags) == 0;
      },
      UndefinedResult);
}

// recv(buffer, flags): Promise<{ bytes, hole, end }>. Fills `buffer` from its start
// until it is full, the stream ends (end: true) or, with RecvFlags.STOP_AT_HOLE, a
// hole comes (hole: its length; the bytes before it are in the buffer).
Napi::Value StreamWrap::Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) ThrowTypeError(env, "The \"buffer\" argument must be a Uint8Array");
  unsigned int flags = FlagsArg(info, 1);
  auto array = info[0].As<Napi::TypedArray>();
  char* data = static_cast<char*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  size_t capacity = array.ByteLength();
  if (capacity == 0) ThrowTypeError(env, "The \"buffer\" argument must not be empty");
  auto held = std::make_shared<std::vector<Napi::ObjectReference>>();
  held->push_back(Napi::Persistent(array.As<Napi::Object>()));
  return Async<Received>(
      info, "virStreamRecvFlags",
      [held, data, capacity, flags](StreamLife& life, Received& out) {
        while (out.bytes < capacity) {
          size_t want = std::min(capacity - out.bytes, static_cast<size_t>(INT_MAX));
          int n = virStreamRecvFlags(life.st, data + out.bytes, want, flags);
          if (n > 0) {
            out.bytes += static_cast<size_t>(n);
          } else if (n == 0) {
            out.end = true;
            break;
          } else if (n == -3) {
            return virStreamRecvHole(life.st, &out.hole, 0) == 0;
          } else {
            return false;
          }
        }
        return true;
      },
      [](Napi::Env env, Received received) -> Napi::Value {
        Napi::Object result = Napi::Object::New(env);
        result.Set("bytes", Napi::Number::New(env, static_cast<double>(received.bytes)));
        result.Set("hole", Napi::Number::New(env, static_cast<double>(received.hole)));
        result.Set("end", Napi::Boolean::New(env, received.end));
        return result;
      });
}

// The transfer is over either way: libvirt's docs say not to abort after a failed finish.
Napi::Value StreamWrap::Finish(const Napi::CallbackInfo& info) {
  return Async<int>(
      info, "virStreamFinish",
      [](StreamLife& life, int&) {
        bool ok = virStreamFinish(life.st) == 0;
        life.transferring.store(false);
        return ok;
      },
      UndefinedResult);
}

Napi::Value StreamWrap::Abort(const Napi::CallbackInfo& info) {
  return Async<int>(
      info, "virStreamAbort",
      [](StreamLife& life, int&) {
        bool ok = virStreamAbort(life.st) == 0;
        life.transferring.store(false);
        return ok;
      },
      UndefinedResult);
}

}  // namespace lvb
