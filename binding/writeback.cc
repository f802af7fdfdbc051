#include "writeback.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "errors.h"

namespace lvb {

namespace {

class WritebackWorker final : public Napi::AsyncWorker {
 public:
  WritebackWorker(Napi::Env env, int fd, off64_t offset, off64_t length, bool finish, bool evict)
      : Napi::AsyncWorker(env, finish ? "finishWriteback" : "startWriteback"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        offset_(offset),
        length_(length),
        finish_(finish),
        evict_(evict) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    unsigned int flags = finish_ ? SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
                                 : SYNC_FILE_RANGE_WRITE;
    if (sync_file_range(fd_, offset_, length_, flags) != 0) {
      errno_ = errno;
      syscall_ = "sync_file_range";
      return;
    }
    if (finish_ && evict_) {
      int rc = posix_fadvise(fd_, offset_, length_, POSIX_FADV_DONTNEED);
      if (rc != 0) {
        errno_ = rc;
        syscall_ = "posix_fadvise";
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      if (errno_ == 0) {
        deferred_.Resolve(env.Undefined());
        return;
      }
      Napi::Error error = Napi::Error::New(env, std::string(syscall_) + ": " + std::strerror(errno_));
      const char* name = strerrorname_np(errno_);
      error.Set("code", Napi::String::New(env, name != nullptr ? name : "UNKNOWN"));
      error.Set("errno", Napi::Number::New(env, errno_));
      error.Set("syscall", Napi::String::New(env, syscall_));
      deferred_.Reject(error.Value());
    } catch (const Napi::Error&) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  off64_t offset_;
  off64_t length_;
  bool finish_;
  bool evict_;
  int errno_ = 0;
  const char* syscall_ = "";
};

// Reads (fd, offset, length): each a non-negative safe integer, named in the TypeError.
void ReadRange(const Napi::CallbackInfo& info, int* fd, off64_t* offset, off64_t* length) {
  const char* names[] = {"fd", "offset", "length"};
  double values[3];
  for (size_t i = 0; i < 3; i++) {
    if (info.Length() <= i || !info[i].IsNumber()) {
      ThrowTypeError(info.Env(), std::string("The \"") + names[i] + "\" argument must be a number");
    }
    double value = info[i].As<Napi::Number>().DoubleValue();
    if (!(value >= 0) || value > 9007199254740991.0 || value != static_cast<double>(static_cast<int64_t>(value))) {
      ThrowTypeError(info.Env(), std::string("The \"") + names[i] + "\" argument must be a non-negative integer");
    }
    values[i] = value;
  }
  if (values[0] > 2147483647.0) ThrowTypeError(info.Env(), "The \"fd\" argument is out of range");
  *fd = static_cast<int>(values[0]);
  *offset = static_cast<off64_t>(values[1]);
  *length = static_cast<off64_t>(values[2]);
}

Napi::Value Queue(const Napi::CallbackInfo& info, bool finish) {
  int fd;
  off64_t offset;
  off64_t length;
  ReadRange(info, &fd, &offset, &length);
  bool evict = finish && info.Length() > 3 && info[3].ToBoolean().Value();
  auto* worker = new WritebackWorker(info.Env(), fd, offset, length, finish, evict);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

Napi::Value StartWriteback(const Napi::CallbackInfo& info) { return Queue(info, false); }

Napi::Value FinishWriteback(const Napi::CallbackInfo& info) { return Queue(info, true); }

}  // namespace lvb
