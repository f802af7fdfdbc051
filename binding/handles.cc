#include "handles.h"

#include <pthread.h>

#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "errors.h"

namespace lvb {

namespace {

class ReleaseThread {
 public:
  void Push(std::function<void()> release) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(release));
      if (!started_) {
        started_ = true;
        // Detached: it only ever drops references, and the process may exit at any time.
        std::thread([this] {
      pthread_setname_np(pthread_self(), "lvb-release");
      Loop();
    }).detach();
      }
    }
    wake_.notify_one();
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> next;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return !queue_.empty(); });
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      next();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool started_ = false;
};

// Leaked on purpose: the detached thread may still use it while static
// destructors run at exit.
ReleaseThread& TheReleaseThread() {
  static ReleaseThread* instance = new ReleaseThread();
  return *instance;
}

}  // namespace

void ReleaseInBackground(std::function<void()> release) { TheReleaseThread().Push(std::move(release)); }

HeldReference::HeldReference(virConnectPtr conn) : conn_(conn) {
  if (conn_ != nullptr) virConnectRef(conn_);
}

HeldReference::HeldReference(virDomainPtr dom) : dom_(dom) {
  if (dom_ != nullptr) virDomainRef(dom_);
}

HeldReference::HeldReference(virDomainCheckpointPtr cp) : cp_(cp) {
  if (cp_ != nullptr) virDomainCheckpointRef(cp_);
}

HeldReference::HeldReference(HeldReference&& other) noexcept
    : conn_(other.conn_), dom_(other.dom_), cp_(other.cp_) {
  other.conn_ = nullptr;
  other.dom_ = nullptr;
  other.cp_ = nullptr;
}

HeldReference& HeldReference::operator=(HeldReference&& other) noexcept {
  if (this != &other) {
    Release();
    conn_ = other.conn_;
    dom_ = other.dom_;
    cp_ = other.cp_;
    other.conn_ = nullptr;
    other.dom_ = nullptr;
    other.cp_ = nullptr;
  }
  return *this;
}

HeldReference::~HeldReference() {
  // Normally released on the worker thread; reaching here with a reference means the
  // work never ran (environment teardown), so hand it to the release thread.
  if (conn_ != nullptr || dom_ != nullptr || cp_ != nullptr) {
    virConnectPtr conn = conn_;
    virDomainPtr dom = dom_;
    virDomainCheckpointPtr cp = cp_;
    conn_ = nullptr;
    dom_ = nullptr;
    cp_ = nullptr;
    ReleaseInBackground([conn, dom, cp] {
      if (cp != nullptr) virDomainCheckpointFree(cp);
      if (dom != nullptr) virDomainFree(dom);
      if (conn != nullptr) virConnectClose(conn);
    });
  }
}

void HeldReference::Release() {
  if (cp_ != nullptr) {
    virDomainCheckpointFree(cp_);
    cp_ = nullptr;
  }
  if (dom_ != nullptr) {
    virDomainFree(dom_);
    dom_ = nullptr;
  }
  if (conn_ != nullptr) {
    virConnectClose(conn_);
    conn_ = nullptr;
  }
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

std::optional<std::string> OptionalStringArg(const Napi::CallbackInfo& info, size_t index,
                                             const char* name) {
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
    ThrowTypeError(info.Env(), std::string("The \"") + name +
                                   "\" argument must be an unsigned 32-bit integer, got " +
                                   std::to_string(value));
  }
  return static_cast<unsigned int>(value);
}

}  // namespace lvb
