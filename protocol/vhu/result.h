// Error values for everything that parses input from a peer: a malformed
// message or ring is an ordinary outcome here, never an exception or abort.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace vhu {

// How a failure leaves the thing that reported it. A channel that returns
// Invalid has consumed the whole offending message and stays framed; Desync
// means the byte stream can no longer be trusted and must be closed.
enum class ErrorKind { Invalid, Desync, Closed, Io, Timeout };

struct Error {
  std::string message;
  ErrorKind kind = ErrorKind::Invalid;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}    // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }
  const std::string& message() const { return error().message; }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return err_; }
  const std::string& message() const { return error().message; }

 private:
  Error err_;
  bool ok_ = true;
};

inline Result<void> Ok() { return {}; }
inline Error Err(std::string message, ErrorKind kind = ErrorKind::Invalid) {
  return Error{std::move(message), kind};
}

}  // namespace vhu

// Propagates the error of a Result<...> expression to the caller.
#define VHU_TRY(expr)                              \
  do {                                             \
    auto vhu_try_r_ = (expr);                      \
    if (!vhu_try_r_.ok()) return vhu_try_r_.error(); \
  } while (0)
