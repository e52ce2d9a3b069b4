#include "json.h"

#include <gtest/gtest.h>

#include <string>

namespace conform {
namespace {

TEST(Json, CapabilitiesDocument) {
  auto j = parse_json(" {\n  \"type\": \"fs\",\n  \"features\": [\"migrate-precopy\", \"separate-options\"]\n}\n");
  ASSERT_TRUE(j) << j.message();
  ASSERT_EQ(j->kind, JsonValue::Kind::Object);
  ASSERT_NE(j->member("type"), nullptr);
  EXPECT_EQ(j->member("type")->kind, JsonValue::Kind::String);
  EXPECT_EQ(j->member("type")->text, "fs");
  const JsonValue* f = j->member("features");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->kind, JsonValue::Kind::Array);
  ASSERT_EQ(f->items.size(), 2u);
  EXPECT_EQ(f->items[1].text, "separate-options");
  EXPECT_EQ(j->member("absent"), nullptr);
}

TEST(Json, ScalarsAndEscapes) {
  auto j = parse_json(R"([null, true, false, -0.5e+3, 0, "a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"])");
  ASSERT_TRUE(j) << j.message();
  ASSERT_EQ(j->items.size(), 6u);
  EXPECT_EQ(j->items[0].kind, JsonValue::Kind::Null);
  EXPECT_TRUE(j->items[1].boolean);
  EXPECT_FALSE(j->items[2].boolean);
  EXPECT_EQ(j->items[3].text, "-0.5e+3");
  EXPECT_EQ(j->items[4].text, "0");
  EXPECT_EQ(j->items[5].text, "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(Json, RejectsWhatIsNotJson) {
  for (const char* bad : {"", "{", "{\"type\": \"fs\",}", "{type: \"fs\"}", "{\"a\" 1}", "[1 2]", "01", "1.", "-",
                          "+1", "1e", "'x'", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"a\nb\"",
                          "tru", "nul", "{} {}", "{\"type\": \"fs\"} trailing", "\"unterminated"}) {
    auto j = parse_json(bad);
    EXPECT_FALSE(j) << "accepted: " << bad;
  }
}

TEST(Json, ErrorsSayWhere) {
  auto j = parse_json("{\"type\": fs}");
  ASSERT_FALSE(j);
  EXPECT_EQ(j.message(), "unknown literal at offset 9");
  auto k = parse_json("[1, }");
  ASSERT_FALSE(k);
  EXPECT_EQ(k.message(), "expected a value at offset 4");
}

TEST(Json, NestingIsBounded) {
  std::string deep(10000, '[');
  auto j = parse_json(deep);
  ASSERT_FALSE(j);
  EXPECT_NE(j.message().find("nesting deeper than"), std::string::npos) << j.message();
  std::string ok = std::string(60, '[') + std::string(60, ']');
  EXPECT_TRUE(parse_json(ok));
}

}  // namespace
}  // namespace conform
