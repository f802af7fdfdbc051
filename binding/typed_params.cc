#include "typed_params.h"

#include <cmath>

#include "errors.h"

namespace lvb {

TypedParams CopyTypedParams(const virTypedParameter* params, int count) {
  TypedParams out;
  out.reserve(count > 0 ? count : 0);
  for (int i = 0; i < count; i++) {
    const virTypedParameter& p = params[i];
    TypedParam param;
    param.field = p.field;
    param.type = p.type;
    switch (p.type) {
      case VIR_TYPED_PARAM_INT:
        param.value = p.value.i;
        break;
      case VIR_TYPED_PARAM_UINT:
        param.value = p.value.ui;
        break;
      case VIR_TYPED_PARAM_LLONG:
        param.value = p.value.l;
        break;
      case VIR_TYPED_PARAM_ULLONG:
        param.value = p.value.ul;
        break;
      case VIR_TYPED_PARAM_DOUBLE:
        param.value = p.value.d;
        break;
      case VIR_TYPED_PARAM_BOOLEAN:
        param.value = p.value.b != 0;
        break;
      case VIR_TYPED_PARAM_STRING:
        param.value = std::string(p.value.s != nullptr ? p.value.s : "");
        break;
      default:
        continue;  // a type newer than this build: skipped rather than misread
    }
    out.push_back(std::move(param));
  }
  return out;
}

namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;

Napi::Value ParamValue(Napi::Env env, const TypedParam& param) {
  return std::visit(
      [&env](const auto& v) -> Napi::Value {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return Napi::Boolean::New(env, v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return Napi::String::New(env, v);
        } else if constexpr (std::is_same_v<T, long long>) {
          if (std::fabs(static_cast<double>(v)) <= kMaxSafeInteger)
            return Napi::Number::New(env, static_cast<double>(v));
          return Napi::BigInt::New(env, static_cast<int64_t>(v));
        } else if constexpr (std::is_same_v<T, unsigned long long>) {
          if (static_cast<double>(v) <= kMaxSafeInteger) return Napi::Number::New(env, static_cast<double>(v));
          return Napi::BigInt::New(env, static_cast<uint64_t>(v));
        } else {
          return Napi::Number::New(env, static_cast<double>(v));
        }
      },
      param.value);
}

}  // namespace

Napi::Object TypedParamsToJS(Napi::Env env, const TypedParams& params) {
  Napi::Object result = Napi::Object::New(env);
  for (const TypedParam& param : params) {
    Napi::Value value = ParamValue(env, param);
    if (result.HasOwnProperty(param.field)) {
      Napi::Value existing = result.Get(param.field);
      Napi::Array list;
      if (existing.IsArray()) {
        list = existing.As<Napi::Array>();
      } else {
        list = Napi::Array::New(env);
        list.Set(uint32_t{0}, existing);
        result.Set(param.field, list);
      }
      list.Set(list.Length(), value);
    } else {
      result.Set(param.field, value);
    }
  }
  return result;
}

namespace {

TypedParam ParamFromJS(Napi::Env env, const std::string& field, Napi::Value value, int type) {
  TypedParam param;
  param.field = field;
  if (field.size() >= VIR_TYPED_PARAM_FIELD_LENGTH) {
    ThrowTypeError(env, "typed parameter name \"" + field + "\" is longer than libvirt allows (" +
                            std::to_string(VIR_TYPED_PARAM_FIELD_LENGTH - 1) + ")");
  }
  auto fail = [&](const char* expected) {
    ThrowTypeError(env, "typed parameter \"" + field + "\" must be " + expected);
  };
  if (type == 0) {
    if (value.IsString())
      type = VIR_TYPED_PARAM_STRING;
    else if (value.IsBoolean())
      type = VIR_TYPED_PARAM_BOOLEAN;
    else if (value.IsBigInt())
      type = VIR_TYPED_PARAM_ULLONG;
    else if (value.IsNumber()) {
      double d = value.As<Napi::Number>().DoubleValue();
      if (std::floor(d) == d && std::fabs(d) <= kMaxSafeInteger)
        type = d >= 0 ? VIR_TYPED_PARAM_ULLONG : VIR_TYPED_PARAM_LLONG;
      else
        type = VIR_TYPED_PARAM_DOUBLE;
    } else
      fail("a string, boolean, number or bigint");
  }
  param.type = type;
  auto integer = [&](double min, double max) -> double {
    double d;
    if (value.IsBigInt()) {
      bool lossless = false;
      d = static_cast<double>(value.As<Napi::BigInt>().Int64Value(&lossless));
    } else if (value.IsNumber()) {
      d = value.As<Napi::Number>().DoubleValue();
    } else {
      fail("an integer");
      return 0;
    }
    if (std::floor(d) != d || d < min || d > max) fail("an integer in range");
    return d;
  };
  switch (type) {
    case VIR_TYPED_PARAM_INT:
      param.value = static_cast<int>(integer(-2147483648.0, 2147483647.0));
      break;
    case VIR_TYPED_PARAM_UINT:
      param.value = static_cast<unsigned int>(integer(0, 4294967295.0));
      break;
    case VIR_TYPED_PARAM_LLONG:
      if (value.IsBigInt()) {
        bool lossless = false;
        param.value = static_cast<long long>(value.As<Napi::BigInt>().Int64Value(&lossless));
        if (!lossless) fail("a 64-bit signed integer");
      } else {
        param.value = static_cast<long long>(integer(-kMaxSafeInteger, kMaxSafeInteger));
      }
      break;
    case VIR_TYPED_PARAM_ULLONG:
      if (value.IsBigInt()) {
        bool lossless = false;
        param.value = static_cast<unsigned long long>(value.As<Napi::BigInt>().Uint64Value(&lossless));
        if (!lossless) fail("a 64-bit unsigned integer");
      } else {
        param.value = static_cast<unsigned long long>(integer(0, kMaxSafeInteger));
      }
      break;
    case VIR_TYPED_PARAM_DOUBLE:
      if (!value.IsNumber()) fail("a number");
      param.value = value.As<Napi::Number>().DoubleValue();
      break;
    case VIR_TYPED_PARAM_BOOLEAN:
      if (!value.IsBoolean()) fail("a boolean");
      param.value = value.As<Napi::Boolean>().Value();
      break;
    case VIR_TYPED_PARAM_STRING:
      if (!value.IsString()) fail("a string");
      param.value = value.As<Napi::String>().Utf8Value();
      break;
    default:
      fail("of a known type (1-7)");
  }
  return param;
}

}  // namespace

TypedParams TypedParamsFromJS(Napi::Env env, Napi::Object object) {
  TypedParams out;
  Napi::Array keys = object.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); i++) {
    std::string field = keys.Get(i).As<Napi::String>().Utf8Value();
    Napi::Value value = object.Get(field);
    auto push = [&](Napi::Value v) {
      if (v.IsObject() && !v.IsArray()) {
        Napi::Object typed = v.As<Napi::Object>();
        Napi::Value type = typed.Get("type");
        if (!type.IsNumber())
          ThrowTypeError(env, "typed parameter \"" + field + "\": type must be a TypedParameterType");
        out.push_back(ParamFromJS(env, field, typed.Get("value"), type.As<Napi::Number>().Int32Value()));
      } else {
        out.push_back(ParamFromJS(env, field, v, 0));
      }
    };
    if (value.IsArray()) {
      Napi::Array list = value.As<Napi::Array>();
      for (uint32_t j = 0; j < list.Length(); j++) push(list.Get(j));
    } else {
      push(value);
    }
  }
  return out;
}

bool BuildTypedParams(const TypedParams& params, virTypedParameterPtr* out, int* count) {
  *out = nullptr;
  *count = 0;
  int max = 0;
  for (const TypedParam& p : params) {
    const char* f = p.field.c_str();
    int rc = std::visit(
        [&](const auto& v) -> int {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, int>)
            return virTypedParamsAddInt(out, count, &max, f, v);
          else if constexpr (std::is_same_v<T, unsigned int>)
            return virTypedParamsAddUInt(out, count, &max, f, v);
          else if constexpr (std::is_same_v<T, long long>)
            return virTypedParamsAddLLong(out, count, &max, f, v);
          else if constexpr (std::is_same_v<T, unsigned long long>)
            return virTypedParamsAddULLong(out, count, &max, f, v);
          else if constexpr (std::is_same_v<T, double>)
            return virTypedParamsAddDouble(out, count, &max, f, v);
          else if constexpr (std::is_same_v<T, bool>)
            return virTypedParamsAddBoolean(out, count, &max, f, v ? 1 : 0);
          else
            return virTypedParamsAddString(out, count, &max, f, v.c_str());
        },
        p.value);
    if (rc < 0) {
      virTypedParamsFree(*out, *count);
      *out = nullptr;
      *count = 0;
      return false;
    }
  }
  return true;
}

}  // namespace lvb
