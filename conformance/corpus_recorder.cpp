#include "corpus_recorder.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "vhu/fuzz_framing.h"

namespace conform {

namespace fr = vhu::fuzz::framing;

void CorpusRecorder::add(const vhu::Message& m) {
  // Payloads the framing cannot carry (its size is a u16 capped at the
  // channel limit) are cut; the fuzzer sees what a strict back-end reads.
  const size_t n = std::min(m.payload.size(), fr::kMaxPayload);
  fr::RecordHeader h{};
  h.request = m.hdr.request;
  h.flags = m.hdr.flags;
  // Exact fd count (n - 1 encoding): a case that sends a wrong number of fds
  // on purpose is replayed with that number.
  h.fds = static_cast<uint8_t>(std::min<size_t>(m.fds.size(), vhu::kMaxFds) + 1);
  // Kick fds arrive signalled, as QEMU hands them over.
  h.aux = fr::kAuxSignal;
  std::lock_guard lock(mu_);
  fr::append(bytes_, h, {m.payload.data(), n});
}

bool CorpusRecorder::empty() const {
  std::lock_guard lock(mu_);
  return bytes_.empty();
}

vhu::Result<void> CorpusRecorder::write(const std::string& dir, const std::string& case_id) const {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path sub = fs::path(dir) / "vhost_user_messages";
  fs::create_directories(sub, ec);
  if (ec) return vhu::Err(fmt::format("--record-corpus: cannot create {}: {}", sub.string(), ec.message()));
  const fs::path file = sub / ("case-" + case_id);
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  std::lock_guard lock(mu_);
  out.write(reinterpret_cast<const char*>(bytes_.data()), static_cast<std::streamsize>(bytes_.size()));
  if (!out) return vhu::Err(fmt::format("--record-corpus: cannot write {}", file.string()));
  return vhu::Ok();
}

}  // namespace conform
