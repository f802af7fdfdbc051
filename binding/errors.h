// libvirt reports failures through a per-thread "last error". These helpers copy it
// on the thread that made the failing call and turn it into a LibvirtError on the
// JS thread, so a message libvirt produced is never replaced by "unknown error".
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <napi.h>

#include <optional>
#include <string>

namespace lvb {

struct LibvirtErrorInfo {
  int code = 0;
  int domain = 0;  // libvirt's name for the error's source (VIR_FROM_*), not a VM
  int level = 0;
  std::string message;
  // The libvirt function that failed (virDomainLookupByName).
  std::string operation;
  std::optional<std::string> str1;
  std::optional<std::string> str2;
  std::optional<std::string> str3;
  int int1 = 0;
  int int2 = 0;
};

// Must run on the thread where the libvirt call failed, right after it.
LibvirtErrorInfo CaptureLastError(const char* operation);

// An error for a handle whose connection was closed: libvirt's own code for an
// invalid connection, so callers match it the same way as daemon errors.
LibvirtErrorInfo ClosedConnectionError(const char* operation);

Napi::Error MakeLibvirtError(Napi::Env env, const LibvirtErrorInfo& info);

// An Error created on the JS thread when an async call is made: its stack holds
// the caller's frames, which the error a failed call rejects with lacks (it is
// created later, from the event loop). Costs a stack capture per call: used for
// the rare calls (opening a connection); the others use WithCallers.
Napi::ObjectReference CaptureCallSite(Napi::Env env);

// `promise`, whose rejection gets the frames of the async functions awaiting it,
// captured when it fails (V8's async stack trace of the rejection's handler),
// so a call that succeeds pays for no stack at all. A caller that returns the
// promise without awaiting it is not among the frames, as with Node's own
// promise APIs.
Napi::Value WithCallers(Napi::Env env, Napi::Promise promise);

// Gives `error` the frames of `callSite` under its own "Name: message" line.
void AttachCallSite(Napi::Env env, Napi::Value error, const Napi::ObjectReference& callSite);

// Throws a TypeError naming the argument; used before anything reaches libvirt.
[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string& message);

}  // namespace lvb
