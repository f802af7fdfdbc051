#include "checkpoint.h"

#include <libvirt/virterror.h>

#include <vector>

#include "addon.h"
#include "domain.h"
#include "errors.h"
#include "worker.h"

namespace lvb {

const napi_type_tag CheckpointWrap::kTypeTag = {0x6c766263'68656b70ULL, 0x6f696e74'00000003ULL};

Napi::Function CheckpointWrap::Init(Napi::Env env) {
  using W = CheckpointWrap;
  return DefineCheckedClass<W>(env, {
                                        MethodProperty<W, &W::GetName>(env, "getName"),
                                        MethodProperty<W, &W::GetDomain>(env, "getDomain"),
                                        MethodProperty<W, &W::GetXMLDesc>(env, "getXMLDesc"),
                                        MethodProperty<W, &W::GetParent>(env, "getParent"),
                                        MethodProperty<W, &W::ListAllChildren>(env, "listAllChildren"),
                                        MethodProperty<W, &W::Delete>(env, "delete"),
                                    });
}

Napi::Object CheckpointWrap::Wrap(Napi::Env env, Napi::Object domain, OwnedCheckpoint cp) {
  DomainWrap* dom = DomainWrap::Unwrap(domain);
  if (dom->state()->closed) throw MakeLibvirtError(env, ClosedConnectionError("virDomainCheckpointLookup"));
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->checkpointClass.New({OwnerArgument(env, cp), domain});
}

CheckpointWrap::CheckpointWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CheckpointWrap>(info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsObject() ||
      !info[1].As<Napi::Object>().CheckTypeTag(&DomainWrap::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: checkpoints come from a Domain");
  }
  Napi::Object domain = info[1].As<Napi::Object>();
  state_ = DomainWrap::Unwrap(domain)->state();
  domain_ = Napi::Persistent(domain);
  ptr_ = std::move(*info[0].As<Napi::External<OwnedCheckpoint>>().Data());
  const char* name = virDomainCheckpointGetName(ptr_.get());
  if (name != nullptr) name_ = name;
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  // Last: a constructor that throws (any JS call may, while a worker's
  // environment is torn down) gets no destructor to take it out of the set again.
  state_->children.insert(this);
}

// ptr_'s owner hands the reference to the release thread: it may be the
// connection's last.
CheckpointWrap::~CheckpointWrap() { state_->children.erase(this); }

// The connection still holds its own reference here, so this one is not the last.
void CheckpointWrap::ReleaseForClose() { ReleaseHere(ptr_); }

template <typename T>
Napi::Value CheckpointWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                                  std::function<bool(virDomainCheckpointPtr, T&)> work,
                                  std::function<Napi::Value(Napi::Env, T)> convert) {
  return QueueCall<T>(info, state_, ptr_.get(), operation, std::move(work), std::move(convert));
}

Napi::Value CheckpointWrap::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

Napi::Value CheckpointWrap::GetDomain(const Napi::CallbackInfo& info) { return domain_.Value(); }

Napi::Value CheckpointWrap::GetXMLDesc(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<std::string>(
      info, "virDomainCheckpointGetXMLDesc",
      [flags](virDomainCheckpointPtr cp, std::string& out) {
        return TakeCString(virDomainCheckpointGetXMLDesc(cp, flags), out);
      },
      [](Napi::Env env, const std::string& xml) -> Napi::Value { return Napi::String::New(env, xml); });
}

// Resolves null for a root checkpoint: libvirt reports "no parent" as an error,
// but for callers it is an answer, not a failure.
Napi::Value CheckpointWrap::GetParent(const Napi::CallbackInfo& info) {
  auto domainRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(domain_.Value()));
  return Async<OwnedCheckpoint>(
      info, "virDomainCheckpointGetParent",
      [](virDomainCheckpointPtr cp, OwnedCheckpoint& out) {
        out.reset(virDomainCheckpointGetParent(cp, 0));
        if (out != nullptr) return true;
        virErrorPtr err = virGetLastError();
        if (err != nullptr && err->code == VIR_ERR_NO_DOMAIN_CHECKPOINT) {
          virResetLastError();
          return true;
        }
        return false;
      },
      [domainRef](Napi::Env env, OwnedCheckpoint parent) -> Napi::Value {
        if (parent == nullptr) return env.Null();
        return CheckpointWrap::Wrap(env, domainRef->Value(), std::move(parent));
      });
}

Napi::Value CheckpointWrap::ListAllChildren(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  auto domainRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(domain_.Value()));
  return Async<std::vector<OwnedCheckpoint>>(
      info, "virDomainCheckpointListAllChildren",
      [flags](virDomainCheckpointPtr cp, std::vector<OwnedCheckpoint>& out) {
        virDomainCheckpointPtr* children = nullptr;
        int count = virDomainCheckpointListAllChildren(cp, &children, flags);
        if (count < 0) return false;
        out = AdoptList(children, count);
        return true;
      },
      [domainRef](Napi::Env env, std::vector<OwnedCheckpoint> list) -> Napi::Value {
        return WrapCheckpointList(env, domainRef->Value(), std::move(list));
      });
}

Napi::Value CheckpointWrap::Delete(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<int>(
      info, "virDomainCheckpointDelete",
      [flags](virDomainCheckpointPtr cp, int&) { return virDomainCheckpointDelete(cp, flags) == 0; },
      [](Napi::Env env, int) -> Napi::Value { return env.Undefined(); });
}

Napi::Value WrapCheckpointList(Napi::Env env, Napi::Object domain, std::vector<OwnedCheckpoint> list) {
  Napi::Array result = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) result.Set(i, CheckpointWrap::Wrap(env, domain, std::move(list[i])));
  return result;
}

}  // namespace lvb
