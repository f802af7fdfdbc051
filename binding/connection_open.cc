#include "connection_open.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "addon.h"
#include "call_dispatcher.h"
#include "errors.h"
#include "handles.h"
#include "owned.h"

namespace lvb {

namespace {

using Clock = std::chrono::steady_clock;
using Answers = std::vector<std::optional<std::string>>;

class ConnectionOpening;

struct CredentialRequest {
  int type = 0;
  std::string prompt;
  std::optional<std::string> challenge;
  std::optional<std::string> defaultResult;
};

// What the call thread inside virConnectOpenAuth and the JS thread share.
struct OpenShared {
  std::mutex mutex;
  std::condition_variable changed;
  bool abandoned = false;
  uint64_t batch = 0;              // the last batch of requests posted to JS
  uint64_t answeredBatch = 0;      // the batch `answers` belongs to
  std::optional<Answers> answers;  // nullopt: refused
  std::optional<Clock::time_point> deadline;
  bool hasHandler = false;
  std::shared_ptr<CallCompletions> completions;
  // JS thread only: the JS side of the attempt, null once it was collected.
  ConnectionOpening* opening = nullptr;
};

// Overwrites a secret before its memory goes back to the allocator.
void Scrub(std::string& value) {
  std::fill(value.begin(), value.end(), '\0');
  value.clear();
}

void ScrubAll(std::optional<Answers>& answers) {
  if (!answers) return;
  for (auto& answer : *answers) {
    if (answer) Scrub(*answer);
  }
  answers.reset();
}

// JS thread (or any thread, for a refusal): settles `batch` once; later answers to
// it, or answers to a batch no longer waited for, change nothing.
void Answer(const std::shared_ptr<OpenShared>& shared, uint64_t batch, std::optional<Answers> answers) {
  std::lock_guard<std::mutex> lock(shared->mutex);
  if (batch != shared->batch || shared->answeredBatch == batch) {
    ScrubAll(answers);
    return;
  }
  ScrubAll(shared->answers);
  shared->answers = std::move(answers);
  shared->answeredBatch = batch;
  shared->changed.notify_all();
}

// The JS side of one connection attempt: holds the credential handler, and gives up
// on the attempt when told to.
class ConnectionOpening : public Napi::ObjectWrap<ConnectionOpening> {
 public:
  static constexpr const char* kClassName = "ConnectionOpening";
  static const napi_type_tag kTypeTag;

  static Napi::Function Init(Napi::Env env) {
    using W = ConnectionOpening;
    return DefineCheckedClass<W>(env, {MethodProperty<W, &W::Abandon>(env, "abandon")});
  }

  explicit ConnectionOpening(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ConnectionOpening>(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "Illegal constructor: use connect()");
    }
    shared_ = *info[0].As<Napi::External<std::shared_ptr<OpenShared>>>().Data();
    shared_->opening = this;
    info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  }

  ~ConnectionOpening() override { shared_->opening = nullptr; }

  void SetHandler(Napi::Function handler) { handler_ = Napi::Persistent(handler); }
  void SetCall(PendingCall* call) { call_ = call; }
  void CallCompleted(PendingCall* call) {
    if (call_ == call) call_ = nullptr;
  }

  // Runs the handler for one batch of requests; a handler that throws refuses them.
  void Ask(Napi::Env env, const std::shared_ptr<OpenShared>& shared, uint64_t batch,
           const std::vector<CredentialRequest>& requests) {
    if (handler_.IsEmpty()) {
      Answer(shared, batch, std::nullopt);
      return;
    }
    Napi::Array list = Napi::Array::New(env, requests.size());
    for (size_t i = 0; i < requests.size(); i++) {
      const CredentialRequest& request = requests[i];
      Napi::Object item = Napi::Object::New(env);
      item.Set("type", request.type);
      item.Set("prompt", request.prompt);
      item.Set("challenge", request.challenge ? Napi::Value(Napi::String::New(env, *request.challenge)) : env.Null());
      item.Set("defaultResult",
               request.defaultResult ? Napi::Value(Napi::String::New(env, *request.defaultResult)) : env.Null());
      list.Set(i, item);
    }
    size_t expected = requests.size();
    Napi::Function respond = Napi::Function::New(
        env,
        [shared, batch, expected](const Napi::CallbackInfo& info) -> Napi::Value {
          Answer(shared, batch, ReadAnswers(info, expected));
          return info.Env().Undefined();
        },
        "respond");
    try {
      handler_.Call({list, respond});
    } catch (const Napi::Error&) {
      Answer(shared, batch, std::nullopt);
    }
  }

 private:
  // respond(answers: Array<string | null> | null): anything else refuses the batch.
  static std::optional<Answers> ReadAnswers(const Napi::CallbackInfo& info, size_t expected) {
    if (info.Length() < 1 || !info[0].IsArray()) return std::nullopt;
    Napi::Array list = info[0].As<Napi::Array>();
    if (list.Length() != expected) return std::nullopt;
    Answers answers;
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value value = list.Get(i);
      if (value.IsString()) {
        answers.emplace_back(value.As<Napi::String>().Utf8Value());
      } else if (value.IsNull() || value.IsUndefined()) {
        answers.emplace_back(std::nullopt);
      } else {
        return std::nullopt;
      }
    }
    return answers;
  }

  Napi::Value Abandon(const Napi::CallbackInfo& info) {
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->abandoned = true;
      shared_->changed.notify_all();
    }
    if (call_ != nullptr) DetachCall(shared_->completions, call_);
    return info.Env().Undefined();
  }

  std::shared_ptr<OpenShared> shared_;
  Napi::FunctionReference handler_;
  PendingCall* call_ = nullptr;
};

const napi_type_tag ConnectionOpening::kTypeTag = {0x6c76626f'70656e69ULL, 0x6e670000'00000008ULL};

// A batch of credential requests on its way to the JS thread.
class CredentialMessage final : public PendingCall {
 public:
  CredentialMessage(std::shared_ptr<OpenShared> shared, uint64_t batch, std::vector<CredentialRequest> requests)
      : shared_(std::move(shared)), batch_(batch), requests_(std::move(requests)) {}

  void Execute() override {}

  void Complete(Napi::Env env) override {
    ConnectionOpening* opening = shared_->opening;
    bool abandoned = false;
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      abandoned = shared_->abandoned;
    }
    if (opening == nullptr || abandoned) {
      Answer(shared_, batch_, std::nullopt);
      return;
    }
    opening->Ask(env, shared_, batch_, requests_);
  }

 private:
  std::shared_ptr<OpenShared> shared_;
  uint64_t batch_;
  std::vector<CredentialRequest> requests_;
};

std::optional<std::string> OptionalCString(const char* value) {
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

// libvirt's auth callback, on the thread inside virConnectOpenAuth: 0 with every
// result filled in, or -1 (libvirt then fails the attempt with its own error).
int AskForCredentials(virConnectCredentialPtr credentials, unsigned int count, void* data) {
  const std::shared_ptr<OpenShared>& shared = *static_cast<std::shared_ptr<OpenShared>*>(data);
  if (!shared->hasHandler) return -1;
  std::vector<CredentialRequest> requests;
  for (unsigned int i = 0; i < count; i++) {
    requests.push_back({credentials[i].type, credentials[i].prompt != nullptr ? credentials[i].prompt : "",
                        OptionalCString(credentials[i].challenge), OptionalCString(credentials[i].defresult)});
  }
  uint64_t batch = 0;
  {
    std::lock_guard<std::mutex> lock(shared->mutex);
    if (shared->abandoned) return -1;
    batch = ++shared->batch;
  }
  std::unique_ptr<PendingCall> message = std::make_unique<CredentialMessage>(shared, batch, std::move(requests));
  if (!PostToJsThread(shared->completions, message)) return -1;

  std::unique_lock<std::mutex> lock(shared->mutex);
  auto settled = [&] { return shared->abandoned || shared->answeredBatch == batch; };
  if (shared->deadline) {
    shared->changed.wait_until(lock, *shared->deadline, settled);
  } else {
    shared->changed.wait(lock, settled);
  }
  if (!settled()) shared->batch++;  // the deadline passed: a late answer is for nobody
  std::optional<Answers> answers = std::move(shared->answers);
  shared->answers.reset();
  bool usable = !shared->abandoned && shared->answeredBatch == batch && answers && answers->size() == count;
  lock.unlock();

  int result = usable ? 0 : -1;
  for (unsigned int i = 0; result == 0 && i < count; i++) {
    const std::optional<std::string>& answer = (*answers)[i];
    const char* fallback = credentials[i].defresult;
    if (!answer && fallback == nullptr) {
      result = -1;
      break;
    }
    const std::string value = answer ? *answer : std::string(fallback);
    // libvirt frees results with free().
    char* copy = static_cast<char*>(malloc(value.size() + 1));
    if (copy == nullptr) {
      result = -1;
      break;
    }
    std::memcpy(copy, value.c_str(), value.size() + 1);
    credentials[i].result = copy;
    credentials[i].resultlen = static_cast<unsigned int>(value.size());
  }
  if (result != 0) {
    for (unsigned int i = 0; i < count; i++) {
      if (credentials[i].result != nullptr) {
        std::memset(credentials[i].result, 0, credentials[i].resultlen);
        free(credentials[i].result);
        credentials[i].result = nullptr;
        credentials[i].resultlen = 0;
      }
    }
  }
  ScrubAll(answers);
  return result;
}

int kCredentialTypes[] = {
    VIR_CRED_USERNAME,   VIR_CRED_AUTHNAME,     VIR_CRED_LANGUAGE, VIR_CRED_CNONCE,   VIR_CRED_PASSPHRASE,
    VIR_CRED_ECHOPROMPT, VIR_CRED_NOECHOPROMPT, VIR_CRED_REALM,    VIR_CRED_EXTERNAL,
};

// virConnectOpenAuth on a call thread; settles the promise of its ConnectionOpening.
class OpenCall final : public PendingCall {
 public:
  OpenCall(Napi::Env env, Napi::Object opening, std::shared_ptr<OpenShared> shared, std::optional<std::string> uri,
           unsigned int flags)
      : deferred_(Napi::Promise::Deferred::New(env)),
        owner_(Napi::Persistent(opening)),
        callSite_(CaptureCallSite(env)),
        shared_(std::move(shared)),
        uri_(std::move(uri)),
        flags_(flags) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    // An auth structure even without a handler: libvirt then also reads its own
    // auth.conf, and anything else it would ask for is refused, never prompted.
    virConnectAuth auth{kCredentialTypes, sizeof(kCredentialTypes) / sizeof(kCredentialTypes[0]), AskForCredentials,
                        &shared_};
    conn_.reset(virConnectOpenAuth(uri_ ? uri_->c_str() : nullptr, &auth, flags_));
    if (!conn_) error_ = CaptureLastError("virConnectOpenAuth");
    std::lock_guard<std::mutex> lock(shared_->mutex);
    // Given up on: the connection that came too late is closed here, off the JS thread.
    if (shared_->abandoned) ReleaseHere(conn_);
  }

  void Complete(Napi::Env env) override {
    if (shared_->opening != nullptr) shared_->opening->CallCompleted(this);
    try {
      if (conn_) {
        AddonData* data = env.GetInstanceData<AddonData>();
        deferred_.Resolve(data->connectionClass.New({OwnerArgument(env, conn_)}));
      } else {
        Napi::Value error = MakeLibvirtError(env, error_).Value();
        AttachCallSite(env, error, callSite_);
        deferred_.Reject(error);
      }
    } catch (const Napi::Error& e) {
      // While a worker's environment is torn down any JS call may fail: nobody is
      // left to tell.
      try {
        deferred_.Reject(e.Value());
      } catch (const Napi::Error&) {
      }
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference owner_;
  Napi::ObjectReference callSite_;
  std::shared_ptr<OpenShared> shared_;
  std::optional<std::string> uri_;
  unsigned int flags_;
  OwnedConnection conn_;
  LibvirtErrorInfo error_;
};

}  // namespace

Napi::Function InitConnectionOpening(Napi::Env env) { return ConnectionOpening::Init(env); }

Napi::Value OpenConnection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::optional<std::string> uri = OptionalStringArg(info, 0, "uri");
  unsigned int flags = FlagsArg(info, 1);
  Napi::Value handler = info.Length() > 2 ? info[2] : env.Undefined();
  if (!handler.IsFunction() && !handler.IsNull() && !handler.IsUndefined()) {
    ThrowTypeError(env, "The \"onCredentials\" argument must be a function or null");
  }
  Napi::Value timeout = info.Length() > 3 ? info[3] : env.Undefined();
  if (!timeout.IsUndefined() && !timeout.IsNumber()) ThrowTypeError(env, "The \"timeoutMs\" argument must be a number");
  double timeoutMs = timeout.IsNumber() ? timeout.As<Napi::Number>().DoubleValue() : 0;
  if (std::isnan(timeoutMs) || timeoutMs < 0) {
    ThrowTypeError(env, "The \"timeoutMs\" argument must be 0 (no bound) or a positive number of milliseconds");
  }

  AddonData* data = env.GetInstanceData<AddonData>();
  auto shared = std::make_shared<OpenShared>();
  shared->completions = data->calls;
  shared->hasHandler = handler.IsFunction();
  if (timeoutMs > 0 && std::isfinite(timeoutMs)) {
    shared->deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeoutMs * 1000));
  }
  Napi::Object opening = data->openingClass.New({Napi::External<std::shared_ptr<OpenShared>>::New(env, &shared)});
  ConnectionOpening* wrap = ConnectionOpening::Unwrap(opening);
  if (handler.IsFunction()) wrap->SetHandler(handler.As<Napi::Function>());

  auto call = std::make_unique<OpenCall>(env, opening, shared, std::move(uri), flags);
  opening.Set("promise", call->Promise());
  wrap->SetCall(call.get());
  SubmitCall(data->calls, nullptr, std::move(call));
  return opening;
}

Napi::Value OpenConnectionPromise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value uri = info.Length() > 0 ? info[0] : env.Undefined();
  Napi::Value flags = info.Length() > 1 ? info[1] : env.Undefined();
  Napi::Function open = Napi::Function::New(env, OpenConnection, "openConnection");
  return open.Call({uri, flags, env.Null(), Napi::Number::New(env, 0)}).As<Napi::Object>().Get("promise");
}

}  // namespace lvb
