// --record-corpus DIR: every front-end request a case sends, written as one
// input of the vhost_user_messages fuzz target (protocol/vhu/fuzz_framing.h),
// so each case's exchange seeds the fuzzers with a sequence that reaches deep
// into a back-end.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "vhu/messages.h"
#include "vhu/result.h"

namespace conform {

class CorpusRecorder {
 public:
  void add(const vhu::Message& m);
  bool empty() const;
  // Writes DIR/vhost_user_messages/<case id>; the directory is created.
  vhu::Result<void> write(const std::string& dir, const std::string& case_id) const;

 private:
  mutable std::mutex mu_;
  std::vector<uint8_t> bytes_;
};

}  // namespace conform
