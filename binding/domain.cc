#include "domain.h"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include <array>
#include <vector>

#include "addon.h"
#include "checkpoint.h"
#include "connection.h"
#include "errors.h"
#include "typed_params.h"
#include "worker.h"

namespace lvb {

const napi_type_tag DomainWrap::kTypeTag = {0x6c766264'6f6d6169ULL, 0x6e000000'00000002ULL};

Napi::Function DomainWrap::Init(Napi::Env env) {
  using W = DomainWrap;
  return DefineCheckedClass<W>(env, {
                                        MethodProperty<W, &W::GetName>(env, "getName"),
                                        MethodProperty<W, &W::GetUUID>(env, "getUUIDString"),
                                        MethodProperty<W, &W::GetId>(env, "getId"),
                                        MethodProperty<W, &W::GetXMLDesc>(env, "getXMLDesc"),
                                        MethodProperty<W, &W::GetState>(env, "getState"),
                                        MethodProperty<W, &W::IsActive>(env, "isActive"),
                                        MethodProperty<W, &W::IsPersistent>(env, "isPersistent"),
                                        MethodProperty<W, &W::Start>(env, "start"),
                                        MethodProperty<W, &W::Shutdown>(env, "shutdown"),
                                        MethodProperty<W, &W::Destroy>(env, "destroy"),
                                        MethodProperty<W, &W::Undefine>(env, "undefine"),
                                        MethodProperty<W, &W::QemuMonitorCommand>(env, "qemuMonitorCommand"),
                                        MethodProperty<W, &W::CreateCheckpoint>(env, "createCheckpoint"),
                                        MethodProperty<W, &W::ListAllCheckpoints>(env, "listAllCheckpoints"),
                                        MethodProperty<W, &W::LookupCheckpointByName>(env, "lookupCheckpointByName"),
                                        MethodProperty<W, &W::BackupBegin>(env, "backupBegin"),
                                        MethodProperty<W, &W::BackupGetXMLDesc>(env, "backupGetXMLDesc"),
                                        MethodProperty<W, &W::AbortJob>(env, "abortJob"),
                                        MethodProperty<W, &W::GetJobInfo>(env, "getJobInfo"),
                                        MethodProperty<W, &W::GetJobStats>(env, "getJobStats"),
                                        MethodProperty<W, &W::BlockCopy>(env, "blockCopy"),
                                        MethodProperty<W, &W::BlockJobAbort>(env, "blockJobAbort"),
                                        MethodProperty<W, &W::GetBlockJobInfo>(env, "getBlockJobInfo"),
                                        MethodProperty<W, &W::BlockJobSetSpeed>(env, "blockJobSetSpeed"),
                                        MethodProperty<W, &W::FSFreeze>(env, "fsFreeze"),
                                        MethodProperty<W, &W::FSThaw>(env, "fsThaw"),
                                        MethodProperty<W, &W::GetFSInfo>(env, "getFSInfo"),
                                    });
}

Napi::Object DomainWrap::Wrap(Napi::Env env, Napi::Object connection, OwnedDomain dom) {
  ConnectionWrap* conn = ConnectionWrap::Unwrap(connection);
  if (conn->state()->closed) throw MakeLibvirtError(env, ClosedConnectionError("virDomainLookup"));
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->domainClass.New({OwnerArgument(env, dom), connection});
}

DomainWrap::DomainWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DomainWrap>(info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsObject() ||
      !info[1].As<Napi::Object>().CheckTypeTag(&ConnectionWrap::kTypeTag)) {
    throw Napi::TypeError::New(info.Env(), "Illegal constructor: domains come from a Connection");
  }
  Napi::Object connection = info[1].As<Napi::Object>();
  state_ = ConnectionWrap::Unwrap(connection)->state();
  // The child keeps its connection's JS object alive, and with it the state and
  // any event listeners registered there.
  connection_ = Napi::Persistent(connection);
  ptr_ = std::move(*info[0].As<Napi::External<OwnedDomain>>().Data());
  const char* name = virDomainGetName(ptr_.get());
  if (name != nullptr) name_ = name;
  std::array<char, VIR_UUID_STRING_BUFLEN> uuid{};
  if (virDomainGetUUIDString(ptr_.get(), uuid.data()) == 0) uuid_ = uuid.data();
  info.This().As<Napi::Object>().TypeTag(&kTypeTag);
  // Last: a constructor that throws (any JS call may, while a worker's
  // environment is torn down) gets no destructor to take it out of the set again.
  state_->children.insert(this);
}

// ptr_'s owner hands the reference to the release thread: it may be the
// connection's last.
DomainWrap::~DomainWrap() { state_->children.erase(this); }

// The connection still holds its own reference here, so this one is not the last.
void DomainWrap::ReleaseForClose() { ReleaseHere(ptr_); }

template <typename T>
Napi::Value DomainWrap::Async(const Napi::CallbackInfo& info, const char* operation,
                              std::function<bool(virDomainPtr, T&)> work,
                              std::function<Napi::Value(Napi::Env, T)> convert) {
  return QueueCall<T>(info, state_, ptr_.get(), operation, std::move(work), std::move(convert));
}

Napi::Value DomainWrap::AsyncStatus(const Napi::CallbackInfo& info, const char* operation,
                                    std::function<int(virDomainPtr)> work) {
  return Async<int>(
      info, operation, [work = std::move(work)](virDomainPtr dom, int&) { return work(dom) >= 0; },
      [](Napi::Env env, int) -> Napi::Value { return env.Undefined(); });
}

Napi::Value DomainWrap::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

Napi::Value DomainWrap::GetUUID(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), uuid_); }

Napi::Value DomainWrap::GetId(const Napi::CallbackInfo& info) {
  return Async<unsigned int>(
      info, "virDomainGetID",
      [](virDomainPtr dom, unsigned int& out) {
        out = virDomainGetID(dom);
        return true;  // (unsigned)-1 means "not running", not a failure
      },
      [](Napi::Env env, unsigned int id) -> Napi::Value {
        return id == static_cast<unsigned int>(-1) ? env.Null() : Napi::Number::New(env, id);
      });
}

Napi::Value DomainWrap::GetXMLDesc(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<std::string>(
      info, "virDomainGetXMLDesc",
      [flags](virDomainPtr dom, std::string& out) { return TakeCString(virDomainGetXMLDesc(dom, flags), out); },
      [](Napi::Env env, const std::string& xml) -> Napi::Value { return Napi::String::New(env, xml); });
}

Napi::Value DomainWrap::GetState(const Napi::CallbackInfo& info) {
  return Async<std::array<int, 2>>(
      info, "virDomainGetState",
      [](virDomainPtr dom, std::array<int, 2>& out) { return virDomainGetState(dom, &out[0], &out[1], 0) == 0; },
      [](Napi::Env env, std::array<int, 2> state) -> Napi::Value {
        Napi::Object result = Napi::Object::New(env);
        result.Set("state", state[0]);
        result.Set("reason", state[1]);
        return result;
      });
}

Napi::Value DomainWrap::IsActive(const Napi::CallbackInfo& info) {
  return Async<int>(
      info, "virDomainIsActive",
      [](virDomainPtr dom, int& out) {
        out = virDomainIsActive(dom);
        return out >= 0;
      },
      [](Napi::Env env, int active) -> Napi::Value { return Napi::Boolean::New(env, active == 1); });
}

Napi::Value DomainWrap::IsPersistent(const Napi::CallbackInfo& info) {
  return Async<int>(
      info, "virDomainIsPersistent",
      [](virDomainPtr dom, int& out) {
        out = virDomainIsPersistent(dom);
        return out >= 0;
      },
      [](Napi::Env env, int persistent) -> Napi::Value { return Napi::Boolean::New(env, persistent == 1); });
}

Napi::Value DomainWrap::Start(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return AsyncStatus(info, "virDomainCreateWithFlags",
                     [flags](virDomainPtr dom) { return virDomainCreateWithFlags(dom, flags); });
}

Napi::Value DomainWrap::Shutdown(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return AsyncStatus(info, "virDomainShutdownFlags",
                     [flags](virDomainPtr dom) { return virDomainShutdownFlags(dom, flags); });
}

Napi::Value DomainWrap::Destroy(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return AsyncStatus(info, "virDomainDestroyFlags",
                     [flags](virDomainPtr dom) { return virDomainDestroyFlags(dom, flags); });
}

Napi::Value DomainWrap::Undefine(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return AsyncStatus(info, "virDomainUndefineFlags",
                     [flags](virDomainPtr dom) { return virDomainUndefineFlags(dom, flags); });
}

// qemuMonitorCommand(cmd, flags?) -> Promise<string>
Napi::Value DomainWrap::QemuMonitorCommand(const Napi::CallbackInfo& info) {
  std::string cmd = StringArg(info, 0, "command");
  unsigned int flags = FlagsArg(info, 1);
  return Async<std::string>(
      info, "virDomainQemuMonitorCommand",
      [cmd, flags](virDomainPtr dom, std::string& out) {
        char* reply = nullptr;
        if (virDomainQemuMonitorCommand(dom, cmd.c_str(), &reply, flags) < 0) return false;
        if (reply != nullptr) TakeCString(reply, out);
        return true;
      },
      [](Napi::Env env, const std::string& reply) -> Napi::Value { return Napi::String::New(env, reply); });
}

Napi::Value DomainWrap::CreateCheckpoint(const Napi::CallbackInfo& info) {
  std::string xml = StringArg(info, 0, "xml");
  unsigned int flags = FlagsArg(info, 1);
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return Async<OwnedCheckpoint>(
      info, "virDomainCheckpointCreateXML",
      [xml, flags](virDomainPtr dom, OwnedCheckpoint& out) {
        out.reset(virDomainCheckpointCreateXML(dom, xml.c_str(), flags));
        return out != nullptr;
      },
      [selfRef](Napi::Env env, OwnedCheckpoint cp) -> Napi::Value {
        return CheckpointWrap::Wrap(env, selfRef->Value(), std::move(cp));
      });
}

Napi::Value DomainWrap::ListAllCheckpoints(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return Async<std::vector<OwnedCheckpoint>>(
      info, "virDomainListAllCheckpoints",
      [flags](virDomainPtr dom, std::vector<OwnedCheckpoint>& out) {
        virDomainCheckpointPtr* list = nullptr;
        int count = virDomainListAllCheckpoints(dom, &list, flags);
        if (count < 0) return false;
        out = AdoptList(list, count);
        return true;
      },
      [selfRef](Napi::Env env, std::vector<OwnedCheckpoint> list) -> Napi::Value {
        return WrapCheckpointList(env, selfRef->Value(), std::move(list));
      });
}

Napi::Value DomainWrap::LookupCheckpointByName(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "name");
  auto selfRef = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  return Async<OwnedCheckpoint>(
      info, "virDomainCheckpointLookupByName",
      [name](virDomainPtr dom, OwnedCheckpoint& out) {
        out.reset(virDomainCheckpointLookupByName(dom, name.c_str(), 0));
        return out != nullptr;
      },
      [selfRef](Napi::Env env, OwnedCheckpoint cp) -> Napi::Value {
        return CheckpointWrap::Wrap(env, selfRef->Value(), std::move(cp));
      });
}

// backupBegin(backupXml, checkpointXml | null, flags)
Napi::Value DomainWrap::BackupBegin(const Napi::CallbackInfo& info) {
  std::string backupXml = StringArg(info, 0, "backupXml");
  std::optional<std::string> checkpointXml = OptionalStringArg(info, 1, "checkpointXml");
  unsigned int flags = FlagsArg(info, 2);
  return AsyncStatus(info, "virDomainBackupBegin", [backupXml, checkpointXml, flags](virDomainPtr dom) {
    return virDomainBackupBegin(dom, backupXml.c_str(), checkpointXml ? checkpointXml->c_str() : nullptr, flags);
  });
}

Napi::Value DomainWrap::BackupGetXMLDesc(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<std::string>(
      info, "virDomainBackupGetXMLDesc",
      [flags](virDomainPtr dom, std::string& out) { return TakeCString(virDomainBackupGetXMLDesc(dom, flags), out); },
      [](Napi::Env env, const std::string& xml) -> Napi::Value { return Napi::String::New(env, xml); });
}

// virDomainAbortJob rather than virDomainAbortJobFlags (8.5): a binary built here
// must still load against an older libvirt.
Napi::Value DomainWrap::AbortJob(const Napi::CallbackInfo& info) {
  return AsyncStatus(info, "virDomainAbortJob", [](virDomainPtr dom) { return virDomainAbortJob(dom); });
}

Napi::Value DomainWrap::GetJobInfo(const Napi::CallbackInfo& info) {
  return Async<virDomainJobInfo>(
      info, "virDomainGetJobInfo",
      [](virDomainPtr dom, virDomainJobInfo& out) { return virDomainGetJobInfo(dom, &out) == 0; },
      [](Napi::Env env, virDomainJobInfo job) -> Napi::Value {
        Napi::Object result = Napi::Object::New(env);
        auto num = [&env](unsigned long long v) { return Napi::Number::New(env, static_cast<double>(v)); };
        result.Set("type", job.type);
        result.Set("timeElapsed", num(job.timeElapsed));
        result.Set("timeRemaining", num(job.timeRemaining));
        result.Set("dataTotal", num(job.dataTotal));
        result.Set("dataProcessed", num(job.dataProcessed));
        result.Set("dataRemaining", num(job.dataRemaining));
        result.Set("memTotal", num(job.memTotal));
        result.Set("memProcessed", num(job.memProcessed));
        result.Set("memRemaining", num(job.memRemaining));
        result.Set("fileTotal", num(job.fileTotal));
        result.Set("fileProcessed", num(job.fileProcessed));
        result.Set("fileRemaining", num(job.fileRemaining));
        return result;
      });
}

struct JobStats {
  int type = 0;
  TypedParams params;
};

Napi::Value DomainWrap::GetJobStats(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<JobStats>(
      info, "virDomainGetJobStats",
      [flags](virDomainPtr dom, JobStats& out) {
        virTypedParameterPtr params = nullptr;
        int count = 0;
        if (virDomainGetJobStats(dom, &out.type, &params, &count, flags) < 0) return false;
        out.params = CopyTypedParams(params, count);
        virTypedParamsFree(params, count);
        return true;
      },
      [](Napi::Env env, const JobStats& stats) -> Napi::Value {
        Napi::Object result = Napi::Object::New(env);
        result.Set("type", stats.type);
        result.Set("params", TypedParamsToJS(env, stats.params));
        return result;
      });
}

// Block copy and block jobs: how a running disk moves to new storage while the
// guest keeps writing.

struct BlockJobInfoResult {
  bool running = false;
  virDomainBlockJobInfo info{};
};

// blockCopy(disk, destinationXml, params, flags): params are libvirt's typed
// parameters (bandwidth, granularity, buf-size), each { type, value }.
Napi::Value DomainWrap::BlockCopy(const Napi::CallbackInfo& info) {
  std::string disk = StringArg(info, 0, "disk");
  std::string destination = StringArg(info, 1, "destinationXml");
  TypedParams params;
  if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
    if (!info[2].IsObject()) throw Napi::TypeError::New(info.Env(), "The \"params\" argument must be an object");
    params = TypedParamsFromJS(info.Env(), info[2].As<Napi::Object>());
  }
  unsigned int flags = FlagsArg(info, 3);
  return AsyncStatus(info, "virDomainBlockCopy", [disk, destination, params, flags](virDomainPtr dom) {
    virTypedParameterPtr built = nullptr;
    int count = 0;
    if (!BuildTypedParams(params, &built, &count)) return -1;
    int rc = virDomainBlockCopy(dom, disk.c_str(), destination.c_str(), built, count, flags);
    virTypedParamsFree(built, count);
    return rc;
  });
}

// blockJobAbort(disk, flags): ends the disk's block job; with PIVOT a copy
// that is ready switches the disk over to its destination.
Napi::Value DomainWrap::BlockJobAbort(const Napi::CallbackInfo& info) {
  std::string disk = StringArg(info, 0, "disk");
  unsigned int flags = FlagsArg(info, 1);
  return AsyncStatus(info, "virDomainBlockJobAbort",
                     [disk, flags](virDomainPtr dom) { return virDomainBlockJobAbort(dom, disk.c_str(), flags); });
}

// getBlockJobInfo(disk, flags) -> { type, bandwidth, cur, end } | null (no job).
Napi::Value DomainWrap::GetBlockJobInfo(const Napi::CallbackInfo& info) {
  std::string disk = StringArg(info, 0, "disk");
  unsigned int flags = FlagsArg(info, 1);
  return Async<BlockJobInfoResult>(
      info, "virDomainGetBlockJobInfo",
      [disk, flags](virDomainPtr dom, BlockJobInfoResult& out) {
        int rc = virDomainGetBlockJobInfo(dom, disk.c_str(), &out.info, flags);
        out.running = rc == 1;
        return rc >= 0;
      },
      [](Napi::Env env, const BlockJobInfoResult& result) -> Napi::Value {
        if (!result.running) return env.Null();
        auto num = [&env](unsigned long long v) { return Napi::Number::New(env, static_cast<double>(v)); };
        Napi::Object out = Napi::Object::New(env);
        out.Set("type", result.info.type);
        out.Set("bandwidth", num(result.info.bandwidth));
        out.Set("cur", num(result.info.cur));
        out.Set("end", num(result.info.end));
        return out;
      });
}

// blockJobSetSpeed(disk, bandwidth, flags): MiB/s, or bytes/s with BANDWIDTH_BYTES.
Napi::Value DomainWrap::BlockJobSetSpeed(const Napi::CallbackInfo& info) {
  std::string disk = StringArg(info, 0, "disk");
  uint64_t bandwidth = ByteCountArg(info, 1, "bandwidth");
  unsigned int flags = FlagsArg(info, 2);
  return AsyncStatus(info, "virDomainBlockJobSetSpeed", [disk, bandwidth, flags](virDomainPtr dom) {
    return virDomainBlockJobSetSpeed(dom, disk.c_str(), static_cast<unsigned long>(bandwidth), flags);
  });
}

// Guest file systems, through the guest agent: freezing them makes the disks
// consistent for a backup that starts meanwhile.

namespace {

using FSFreezeCall = int (*)(virDomainPtr, const char**, unsigned int, unsigned int);

// Mount points as the guest names them; none (undefined, null or []) means every
// file system the agent knows.
std::vector<std::string> MountpointsArg(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || info[index].IsUndefined() || info[index].IsNull()) return {};
  const char* problem = "The \"mountpoints\" argument must be an array of strings without NUL characters";
  if (!info[index].IsArray()) ThrowTypeError(info.Env(), problem);
  auto list = info[index].As<Napi::Array>();
  std::vector<std::string> mountpoints;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value value = list.Get(i);
    if (!value.IsString()) ThrowTypeError(info.Env(), problem);
    std::string mountpoint = value.As<Napi::String>().Utf8Value();
    if (mountpoint.find('\0') != std::string::npos) ThrowTypeError(info.Env(), problem);
    mountpoints.push_back(std::move(mountpoint));
  }
  return mountpoints;
}

struct FSInfo {
  std::string mountpoint;
  std::string name;
  std::string fstype;
  std::vector<std::string> devAliases;
};

std::string CopyCString(const char* str) { return str == nullptr ? std::string() : std::string(str); }

}  // namespace

Napi::Value DomainWrap::FSFreezeOrThaw(const Napi::CallbackInfo& info, const char* operation, FSFreezeCall call) {
  std::vector<std::string> mountpoints = MountpointsArg(info, 0);
  unsigned int flags = FlagsArg(info, 1);
  return Async<int>(
      info, operation,
      [mountpoints, flags, call](virDomainPtr dom, int& out) {
        std::vector<const char*> list;
        list.reserve(mountpoints.size());
        for (const std::string& mountpoint : mountpoints) list.push_back(mountpoint.c_str());
        out = call(dom, list.empty() ? nullptr : list.data(), static_cast<unsigned int>(list.size()), flags);
        return out >= 0;
      },
      [](Napi::Env env, int count) -> Napi::Value { return Napi::Number::New(env, count); });
}

// fsFreeze(mountpoints?, flags?) -> Promise<number>: how many file systems were frozen.
Napi::Value DomainWrap::FSFreeze(const Napi::CallbackInfo& info) {
  return FSFreezeOrThaw(info, "virDomainFSFreeze", virDomainFSFreeze);
}

// fsThaw(mountpoints?, flags?) -> Promise<number>: how many file systems were thawed.
Napi::Value DomainWrap::FSThaw(const Napi::CallbackInfo& info) {
  return FSFreezeOrThaw(info, "virDomainFSThaw", virDomainFSThaw);
}

// getFSInfo(flags?) -> Promise<{ mountpoint, name, fstype, devAliases }[]>
Napi::Value DomainWrap::GetFSInfo(const Napi::CallbackInfo& info) {
  unsigned int flags = FlagsArg(info, 0);
  return Async<std::vector<FSInfo>>(
      info, "virDomainGetFSInfo",
      [flags](virDomainPtr dom, std::vector<FSInfo>& out) {
        virDomainFSInfoPtr* list = nullptr;
        int count = virDomainGetFSInfo(dom, &list, flags);
        if (count < 0) return false;
        for (int i = 0; i < count; i++) {
          const virDomainFSInfo& fs = *list[i];
          FSInfo entry{CopyCString(fs.mountpoint), CopyCString(fs.name), CopyCString(fs.fstype), {}};
          for (size_t alias = 0; alias < fs.ndevAlias; alias++)
            entry.devAliases.push_back(CopyCString(fs.devAlias[alias]));
          out.push_back(std::move(entry));
          virDomainFSInfoFree(list[i]);
        }
        free(list);  // NOLINT(cppcoreguidelines-no-malloc): libvirt allocated it with malloc
        return true;
      },
      [](Napi::Env env, const std::vector<FSInfo>& list) -> Napi::Value {
        Napi::Array result = Napi::Array::New(env, list.size());
        for (size_t i = 0; i < list.size(); i++) {
          Napi::Object fs = Napi::Object::New(env);
          fs.Set("mountpoint", list[i].mountpoint);
          fs.Set("name", list[i].name);
          fs.Set("fstype", list[i].fstype);
          Napi::Array aliases = Napi::Array::New(env, list[i].devAliases.size());
          for (size_t alias = 0; alias < list[i].devAliases.size(); alias++) {
            aliases.Set(static_cast<uint32_t>(alias), list[i].devAliases[alias]);
          }
          fs.Set("devAliases", aliases);
          result.Set(static_cast<uint32_t>(i), fs);
        }
        return result;
      });
}

}  // namespace lvb
