// A strict JSON reader (RFC 8259) for what a back-end prints, such as its
// --print-capabilities output: the input is untrusted, so nesting is bounded
// and every error names the offset it was found at.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vhu/result.h"

namespace conform {

struct JsonValue {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  std::string text;  // String: the decoded text (UTF-8); Number: as written
  std::vector<JsonValue> items;                            // Array
  std::vector<std::pair<std::string, JsonValue>> members;  // Object, in input order

  // The first member named `key` of an object, or nullptr.
  const JsonValue* member(std::string_view key) const;
};

const char* json_kind_name(JsonValue::Kind kind);

// One value, with only whitespace around it.
vhu::Result<JsonValue> parse_json(std::string_view text);

}  // namespace conform
