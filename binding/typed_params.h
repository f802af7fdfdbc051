// libvirt's virTypedParameter arrays (job stats, event payloads) to and from JS
// objects. Values are copied on the thread that received them, so the JS side
// never touches memory libvirt owns.
#pragma once

#include <libvirt/libvirt.h>
#include <napi.h>

#include <string>
#include <variant>
#include <vector>

namespace lvb {

struct TypedParam {
  std::string field;
  int type = 0;
  std::variant<int, unsigned int, long long, unsigned long long, double, bool, std::string> value;
};

using TypedParams = std::vector<TypedParam>;

// Copies `count` parameters (does not free them).
TypedParams CopyTypedParams(const virTypedParameter* params, int count);

// { field: value }; 64-bit integers become numbers when exactly representable,
// else BigInt. Repeated fields (libvirt allows them for strings) become arrays.
Napi::Object TypedParamsToJS(Napi::Env env, const TypedParams& params);

// The reverse, for calls that take parameters: each value is { type, value } or a
// plain value whose type is inferred (string, boolean, bigint -> ullong,
// integer number -> ullong if >= 0 else llong, other numbers -> double).
TypedParams TypedParamsFromJS(Napi::Env env, Napi::Object object);

// Builds a libvirt array from `params` (free with virTypedParamsFree).
bool BuildTypedParams(const TypedParams& params, virTypedParameterPtr* out, int* count);

}  // namespace lvb
