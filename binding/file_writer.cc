#include "file_writer.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "errors.h"
#include "handles.h"
#include "xxh128.h"

namespace lvb {

namespace {

// Bytes sent to the disk but not yet waited for: the disk works on these while the
// copy goes on; older ranges are waited for and evicted.
constexpr off64_t kWritebackWindow = 64LL << 20;

// What O_DIRECT asks of a write's position, lengths and memory (the logical block size
// of any disk in use; 4096 covers both 512-byte and 4K-sector devices).
constexpr uintptr_t kDirectAlignment = 4096;

struct Failure {
  int error = 0;
  const char* syscall = "";
};

struct Range {
  off64_t offset;
  off64_t length;
};

// Shared by the wrapper and every write in flight.
struct WriterState {
  // Where writes go through the page cache, and where finish() fsyncs.
  int fd = -1;
  // The caller's descriptor when it was opened with O_DIRECT: aligned writes go there,
  // straight to the disk (fd is then our own reopening of the file without O_DIRECT).
  int directFd = -1;
  int ownedFd = -1;
  std::atomic<bool> directUsable{true};

  WriterState() = default;
  WriterState(const WriterState&) = delete;
  WriterState& operator=(const WriterState&) = delete;
  ~WriterState() { CloseOwned(); }

  // Once nothing more will be written: the caller's descriptor stays the caller's to close.
  void CloseOwned() {
    if (ownedFd < 0) return;
    close(ownedFd);
    ownedFd = -1;
    fd = -1;
  }

  std::mutex hashMutex;
  std::condition_variable hashTurn;
  Xxh128State hash;
  uint64_t nextToHash = 0;      // sequence number of the write whose bytes are hashed next
  uint64_t issued = 0;          // sequence numbers handed out (JS thread only)
  uint64_t writesInFlight = 0;  // JS thread only
  bool digested = false;        // JS thread only

  std::mutex writebackMutex;
  bool writebackEnabled = true;
  std::deque<Range> started;
  off64_t startedBytes = 0;
  Failure failure;  // the first failure of any write or write-back

  void Fail(int error, const char* syscall) {
    std::lock_guard<std::mutex> lock(writebackMutex);
    if (failure.error == 0) failure = {error, syscall};
  }
};

using StatePtr = std::shared_ptr<WriterState>;

// A descriptor opened with O_DIRECT takes only aligned writes: the rest (metadata,
// a disk's unaligned tail, memory the caller did not align) goes through a second
// descriptor of the same file without it. Where /proc cannot reopen the file, the
// descriptor loses O_DIRECT and every write goes through the page cache.
void SetUpDirectWrites(WriterState& state, int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_DIRECT) == 0) return;
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  int buffered = open(self.c_str(), (flags & O_ACCMODE) | O_CLOEXEC);
  if (buffered >= 0) {
    state.fd = buffered;
    state.ownedFd = buffered;
    state.directFd = fd;
  } else {
    fcntl(fd, F_SETFL, flags & ~O_DIRECT);
  }
}

bool DirectAligned(const iovec* pieces, size_t count, off64_t position) {
  if (static_cast<uintptr_t>(position) % kDirectAlignment != 0) return false;
  for (size_t i = 0; i < count; i++) {
    if (reinterpret_cast<uintptr_t>(pieces[i].iov_base) % kDirectAlignment != 0 ||
        pieces[i].iov_len % kDirectAlignment != 0)
      return false;
  }
  return true;
}

bool WritebackUnsupported(int error) {
  return error == EINVAL || error == ENOSYS || error == EOPNOTSUPP || error == ESPIPE;
}

// Waits for the range's write-back and drops its pages from the page cache.
void FinishRange(WriterState& state, const Range& range) {
  if (sync_file_range(state.fd, range.offset, range.length,
                      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
    if (!WritebackUnsupported(errno)) state.Fail(errno, "sync_file_range");
    return;
  }
  int rc = posix_fadvise(state.fd, range.offset, range.length, POSIX_FADV_DONTNEED);
  if (rc != 0 && !WritebackUnsupported(rc)) state.Fail(rc, "posix_fadvise");
}

Napi::Error ErrnoError(Napi::Env env, const Failure& failure) {
  Napi::Error error = Napi::Error::New(env, std::string(failure.syscall) + ": " + std::strerror(failure.error));
  const char* name = strerrorname_np(failure.error);
  error.Set("code", Napi::String::New(env, name != nullptr ? name : "UNKNOWN"));
  error.Set("errno", Napi::Number::New(env, failure.error));
  error.Set("syscall", Napi::String::New(env, failure.syscall));
  return error;
}

// Base for the writer's async operations: resolve with a value, or reject with an
// errno error; never throws out of a completion callback.
class WriterWorker : public Napi::AsyncWorker {
 public:
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  WriterWorker(Napi::Env env, Napi::Object owner, const char* name, StatePtr state)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(Napi::Persistent(owner)),
        state_(std::move(state)) {}

  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  // Runs on the JS thread when the operation is over, whatever its outcome.
  virtual void Settled() {}

  void OnOK() override {
    Settled();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      if (failure_.error != 0) {
        deferred_.Reject(ErrnoError(env, failure_).Value());
      } else {
        deferred_.Resolve(Result(env));
      }
    } catch (const Napi::Error&) {
    }
  }

  void OnError(const Napi::Error& e) override {
    Settled();
    try {
      deferred_.Reject(e.Value());
    } catch (const Napi::Error&) {
    }
  }

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference owner_;  // the FileWriter stays alive while it works
  StatePtr state_;
  Failure failure_;
};

class WriteWorker final : public WriterWorker {
 public:
  // `zeroes`: a hole of that many bytes, hashed as zeroes and never written (pieces empty).
  WriteWorker(Napi::Env env, Napi::Object owner, StatePtr state, off64_t position,
              std::vector<Napi::ObjectReference> held, std::vector<iovec> pieces, off64_t zeroes = 0)
      : WriterWorker(env, owner, "FileWriter.write", std::move(state)),
        position_(position),
        zeroes_(zeroes),
        held_(std::move(held)),
        pieces_(std::move(pieces)) {
    for (const iovec& piece : pieces_) length_ += static_cast<off64_t>(piece.iov_len);
    // Taken last: every write that has a sequence number is queued, so none waits forever.
    sequence_ = state_->issued++;
    state_->writesInFlight++;
  }

 protected:
  void Settled() override { state_->writesInFlight--; }

  void Execute() override {
    WriterState& state = *state_;
    {
      // Hash in issue order: writes run concurrently, the checksum must not.
      std::unique_lock<std::mutex> lock(state.hashMutex);
      state.hashTurn.wait(lock, [&] { return state.nextToHash == sequence_; });
      for (const iovec& piece : pieces_) state.hash.Update(piece.iov_base, piece.iov_len);
      static const uint8_t kZeroes[65536] = {};
      for (off64_t left = zeroes_; left > 0; left -= static_cast<off64_t>(sizeof kZeroes))
        state.hash.Update(kZeroes, static_cast<size_t>(std::min<off64_t>(left, sizeof kZeroes)));
      state.nextToHash++;
    }
    state.hashTurn.notify_all();

    std::vector<iovec> left = pieces_;
    size_t first = 0;
    off64_t position = position_;
    bool cached = false;  // whether any of it went through the page cache
    while (first < left.size()) {
      int count = static_cast<int>(std::min<size_t>(left.size() - first, IOV_MAX));
      bool direct = state.directFd >= 0 && state.directUsable.load(std::memory_order_relaxed) &&
                    DirectAligned(&left[first], left.size() - first, position);
      ssize_t written = pwritev64(direct ? state.directFd : state.fd, &left[first], count, position);
      if (written < 0) {
        if (errno == EINTR) continue;
        // A disk that wants more alignment than we give it: the page cache takes every write from now on.
        if (direct && errno == EINVAL) {
          state.directUsable.store(false, std::memory_order_relaxed);
          continue;
        }
        failure_ = {errno, "pwritev"};
        state.Fail(errno, "pwritev");
        return;
      }
      cached = cached || !direct;
      position += written;
      // Skip what was written; a short write resumes inside a piece.
      while (written > 0 && first < left.size()) {
        size_t take = std::min<size_t>(static_cast<size_t>(written), left[first].iov_len);
        left[first].iov_base = static_cast<uint8_t*>(left[first].iov_base) + take;
        left[first].iov_len -= take;
        written -= static_cast<ssize_t>(take);
        if (left[first].iov_len == 0) first++;
      }
    }
    // Direct writes are on the disk already; the page cache holds nothing of them.
    if (cached) StartWriteback();
  }

 private:
  void StartWriteback() {
    WriterState& state = *state_;
    {
      std::lock_guard<std::mutex> lock(state.writebackMutex);
      if (!state.writebackEnabled || length_ == 0) return;
    }
    if (sync_file_range(state.fd, position_, length_, SYNC_FILE_RANGE_WRITE) != 0) {
      int error = errno;
      std::lock_guard<std::mutex> lock(state.writebackMutex);
      // A file system that cannot do this leaves durability to the final fsync.
      if (WritebackUnsupported(error)) {
        state.writebackEnabled = false;
      } else if (state.failure.error == 0) {
        state.failure = {error, "sync_file_range"};
      }
      return;
    }
    std::vector<Range> due;
    {
      std::lock_guard<std::mutex> lock(state.writebackMutex);
      state.started.push_back({position_, length_});
      state.startedBytes += length_;
      while (state.startedBytes > kWritebackWindow) {
        due.push_back(state.started.front());
        state.startedBytes -= state.started.front().length;
        state.started.pop_front();
      }
    }
    for (const Range& range : due) FinishRange(state, range);
  }

  uint64_t sequence_ = 0;
  off64_t position_;
  off64_t zeroes_;
  off64_t length_ = 0;
  std::vector<Napi::ObjectReference> held_;
  std::vector<iovec> pieces_;
};

class FinishWorker final : public WriterWorker {
 public:
  FinishWorker(Napi::Env env, Napi::Object owner, StatePtr state)
      : WriterWorker(env, owner, "FileWriter.finish", std::move(state)) {}

 protected:
  void Execute() override {
    WriterState& state = *state_;
    std::deque<Range> rest;
    {
      std::lock_guard<std::mutex> lock(state.writebackMutex);
      rest.swap(state.started);
      state.startedBytes = 0;
    }
    for (const Range& range : rest) FinishRange(state, range);
    {
      std::lock_guard<std::mutex> lock(state.writebackMutex);
      // A write-back failure may not show in fsync any more: report it from here.
      if (state.failure.error != 0) {
        failure_ = state.failure;
        state.CloseOwned();
        return;
      }
    }
    if (fsync(state.fd) != 0) failure_ = {errno, "fsync"};
    state.CloseOwned();
    if (failure_.error != 0) return;
    digest_ = state.hash.HexDigest();
  }

  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, digest_); }

 private:
  std::string digest_;
};

class FileWriterWrap : public Napi::ObjectWrap<FileWriterWrap> {
 public:
  static constexpr const char* kClassName = "FileWriter";
  static constexpr napi_type_tag kTypeTag = {0x2b8e41f07c9d5a36ULL, 0xd4a17e0359b26c81ULL};

  explicit FileWriterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FileWriterWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"fd\" argument must be a number");
    double fd = info[0].As<Napi::Number>().DoubleValue();
    if (!(fd >= 0) || fd > INT_MAX || fd != static_cast<double>(static_cast<int>(fd))) {
      ThrowTypeError(env, "The \"fd\" argument must be a non-negative integer");
    }
    state_ = std::make_shared<WriterState>();
    state_->fd = static_cast<int>(fd);
    SetUpDirectWrites(*state_, state_->fd);
    info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  }

  // write(buffers: Uint8Array[], position: number): Promise<void>
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_->digested) throw Napi::Error::New(env, "FileWriter: write() after finish()");
    if (info.Length() < 1 || !info[0].IsArray())
      ThrowTypeError(env, "The \"buffers\" argument must be an array of Uint8Arrays");
    if (info.Length() < 2 || !info[1].IsNumber()) ThrowTypeError(env, "The \"position\" argument must be a number");
    double position = info[1].As<Napi::Number>().DoubleValue();
    if (!(position >= 0) || position > 9007199254740991.0 ||
        position != static_cast<double>(static_cast<int64_t>(position))) {
      ThrowTypeError(env, "The \"position\" argument must be a non-negative integer");
    }
    auto buffers = info[0].As<Napi::Array>();
    // Checked before a sequence number is taken: a refused call must leave no gap in the order.
    for (uint32_t i = 0; i < buffers.Length(); i++) {
      if (!buffers.Get(i).IsTypedArray())
        ThrowTypeError(env, "The \"buffers\" argument must be an array of Uint8Arrays");
    }
    std::vector<Napi::ObjectReference> held;
    std::vector<iovec> pieces;
    held.reserve(buffers.Length());
    for (uint32_t i = 0; i < buffers.Length(); i++) {
      auto array = buffers.Get(i).As<Napi::TypedArray>();
      auto* data = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
      held.push_back(Napi::Persistent(array.As<Napi::Object>()));
      if (array.ByteLength() > 0) pieces.push_back({data, array.ByteLength()});
    }
    // An AsyncWorker deletes itself once its completion has run.
    auto* worker = new WriteWorker(env, info.This().As<Napi::Object>(), state_, static_cast<off64_t>(position),
                                   std::move(held), std::move(pieces));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;  // NOLINT(clang-analyzer-cplusplus.NewDeleteLeaks): the worker is queued, not leaked
  }

  // hashHole(length: number): Promise<void>: `length` zero bytes taken into the checksum
  // in issue order, nothing written: a hole that the file's later writes leave behind.
  Napi::Value HashHole(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_->digested) throw Napi::Error::New(env, "FileWriter: hashHole() after finish()");
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowTypeError(env, "The \"length\" argument must be a number");
    double length = info[0].As<Napi::Number>().DoubleValue();
    if (!(length >= 0) || length > 9007199254740991.0 || length != static_cast<double>(static_cast<int64_t>(length))) {
      ThrowTypeError(env, "The \"length\" argument must be a non-negative integer");
    }
    auto* worker =
        new WriteWorker(env, info.This().As<Napi::Object>(), state_, 0, {}, {}, static_cast<off64_t>(length));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;  // NOLINT(clang-analyzer-cplusplus.NewDeleteLeaks): the worker is queued, not leaked
  }

  // finish(): Promise<string>, once every write has settled: waits for the write-back,
  // fsyncs, and resolves with the XXH3-128 of all bytes written (32 hex digits).
  Napi::Value Finish(const Napi::CallbackInfo& info) {
    if (state_->digested) throw Napi::Error::New(info.Env(), "FileWriter: finish() called twice");
    if (state_->writesInFlight > 0)
      throw Napi::Error::New(info.Env(), "FileWriter: finish() while writes are in flight");
    state_->digested = true;
    auto* worker = new FinishWorker(info.Env(), info.This().As<Napi::Object>(), state_);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

 private:
  StatePtr state_;
};

}  // namespace

Napi::Function InitFileWriter(Napi::Env env) {
  return DefineCheckedClass<FileWriterWrap>(
      env, {
               MethodProperty<FileWriterWrap, &FileWriterWrap::Write>(env, "write"),
               MethodProperty<FileWriterWrap, &FileWriterWrap::HashHole>(env, "hashHole"),
               MethodProperty<FileWriterWrap, &FileWriterWrap::Finish>(env, "finish"),
           });
}

}  // namespace lvb
