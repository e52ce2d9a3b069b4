// A strict JSON reader (RFC 8259) for what a back-end prints, such as its
// --print-capabilities output: the input is untrusted, so nesting is bounded
// and every error names the offset it was found at.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "vhu/result.h"

namespace conform {

struct JsonMember;

struct JsonValue {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  std::string text;  // String: the decoded text (UTF-8); Number: as written
  std::vector<JsonValue> items;                            // Array
  // Object, in input order. A struct of its own, not std::pair: clang with
  // libstdc++ 12 rejects a pair of a type still being defined.
  std::vector<JsonMember> members;

  // The first member named `key` of an object, or nullptr.
  const JsonValue* member(std::string_view key) const;
};

struct JsonMember {
  std::string key;
  JsonValue value;
};

const char* json_kind_name(JsonValue::Kind kind);

// One value, with only whitespace around it.
vhu::Result<JsonValue> parse_json(std::string_view text);

}  // namespace conform
