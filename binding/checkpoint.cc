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

Napi::Object CheckpointWrap::Wrap(Napi::Env env, Napi::Object domain, virDomainCheckpointPtr cp) {
  DomainWrap* dom = DomainWrap::Unwrap(domain);
  if (dom->state()->closed) {
    // Possibly the connection's last reference: freeing it may reach the daemon.
    ReleaseInBackground([cp] { virDomainCheckpointFree(cp); });
    throw MakeLibvirtError(env, ClosedConnectionError("virDomainCheckpointLookup"));
  }
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->checkpointClass.New({Napi::External<virDomainCheckpoint>::New(env, cp), domain});
}

CheckpointWrap::CheckpointWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CheckpointWrap>(info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsObject() ||
      !info[1].As<Napi::Object>().CheckTypeTag(&DomainWrap::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: checkpoints come from a Domain");
  }
  ptr_ = info[0].As<Napi::External<virDomainCheckpoint>>().Data();
  Napi::Object domain = info[1].As<Napi::Object>();
  state_ = DomainWrap::Unwrap(domain)->state();
  domain_ = Napi::Persistent(domain);
  state_->children.insert(this);
  const char* name = virDomainCheckpointGetName(ptr_);
  if (name != nullptr) name_ = name;
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
}

CheckpointWrap::~CheckpointWrap() {
  state_->children.erase(this);
  if (ptr_ != nullptr) {
    virDomainCheckpointPtr cp = ptr_;
    ptr_ = nullptr;
    ReleaseInBackground([cp] { virDomainCheckpointFree(cp); });
  }
}

void CheckpointWrap::ReleaseForClose() {
  if (ptr_ != nullptr) {
    virDomainCheckpointFree(ptr_);
    ptr_ = nullptr;
  }
}

template <typename T>
Napi::Value CheckpointWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                                  std::function<bool(virDomainCheckpointPtr, T&)> work,
                                  std::function<Napi::Value(Napi::Env, T&)> convert) {
  return QueueCall<T>(info, state_, ptr_, operation, std::move(work), std::move(convert));
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
      [](Napi::Env env, std::string& xml) -> Napi::Value { return Napi::String::New(env, xml); });
}

// Resolves null for a root checkpoint: libvirt reports "no parent" as an error,
// but for callers it is an answer, not a failure.
Napi::Value CheckpointWrap::GetParent(const Napi::CallbackInfo& info) {
  auto domainRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(domain_.Value()));
  return Async<virDomainCheckpointPtr>(
      info, "virDomainCheckpointGetParent",
      [](virDomainCheckpointPtr cp, virDomainCheckpointPtr& out) {
        out = virDomainCheckpointGetParent(cp, 0);
        if (out != nullptr) return true;
        virErrorPtr err = virGetLastError();
        if (err != nullptr && err->code == VIR_ERR_NO_DOMAIN_CHECKPOINT) {
          virResetLastError();
          return true;
        }
        return false;
      },
      [domainRef](Napi::Env env, virDomainCheckpointPtr& parent) -> Napi::Value {
        if (parent == nullptr) return env.Null();
        virDomainCheckpointPtr owned = parent;
        parent = nullptr;
        return CheckpointWrap::Wrap(env, domainRef->Value(), owned);
      });
}

Napi::Value CheckpointWrap::ListAllChildren(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  auto domainRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(domain_.Value()));
  return Async<std::vector<virDomainCheckpointPtr>>(
      info, "virDomainCheckpointListAllChildren",
      [flags](virDomainCheckpointPtr cp, std::vector<virDomainCheckpointPtr>& out) {
        virDomainCheckpointPtr* children = nullptr;
        int count = virDomainCheckpointListAllChildren(cp, &children, flags);
        if (count < 0) return false;
        out.assign(children, children + count);
        free(children);
        return true;
      },
      [domainRef](Napi::Env env, std::vector<virDomainCheckpointPtr>& list) -> Napi::Value {
        return WrapCheckpointList(env, domainRef->Value(), list);
      });
}

Napi::Value CheckpointWrap::Delete(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<int>(
      info, "virDomainCheckpointDelete",
      [flags](virDomainCheckpointPtr cp, int&) { return virDomainCheckpointDelete(cp, flags) == 0; },
      [](Napi::Env env, int&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value WrapCheckpointList(Napi::Env env, Napi::Object domain, std::vector<virDomainCheckpointPtr>& list) {
  Napi::Array result = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) {
    virDomainCheckpointPtr owned = list[i];
    list[i] = nullptr;
    try {
      result.Set(i, CheckpointWrap::Wrap(env, domain, owned));
    } catch (...) {
      for (size_t j = i + 1; j < list.size(); j++) ReleaseInBackground([cp = list[j]] { virDomainCheckpointFree(cp); });
      list.clear();
      throw;
    }
  }
  list.clear();
  return result;
}

}  // namespace lvb
