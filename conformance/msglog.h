// The last vhost-user messages each way, decoded, for failure reports and
// --verbose. Bounded so a long case cannot grow it without limit.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "vhu/messages.h"

namespace conform {

enum class Dir : uint8_t {
  ToBackend,    // front-end request on the main socket
  FromBackend,  // back-end reply on the main socket
  BackendReq,   // back-end request on the BACKEND_REQ channel
  BackendRsp,   // front-end reply on the BACKEND_REQ channel
};

class MessageLog {
 public:
  explicit MessageLog(size_t keep_each_way = 20) : keep_(keep_each_way) {}

  void record(Dir d, const vhu::Message& m, const std::string& note = {});
  void record_text(Dir d, const std::string& text);
  // Messages in the order they happened, numbered, last `keep` of each direction.
  std::string render() const;
  uint64_t count(Dir d) const;
  // Called with each line as it is recorded (--verbose).
  void set_echo(std::function<void(const std::string&)> f) { echo_ = std::move(f); }
  // Called with each message as it is recorded (--record-corpus).
  void set_tap(std::function<void(Dir, const vhu::Message&)> f) { tap_ = std::move(f); }

 private:
  struct Line {
    uint64_t seq;
    std::string text;
  };
  size_t keep_;
  mutable std::mutex mu_;
  uint64_t seq_ = 0;
  std::deque<Line> out_, in_;
  uint64_t counts_[4] = {0, 0, 0, 0};
  std::function<void(const std::string&)> echo_;
  std::function<void(Dir, const vhu::Message&)> tap_;
};

}  // namespace conform
