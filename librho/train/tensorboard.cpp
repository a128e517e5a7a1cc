#include "librho/train/tensorboard.h"

#include <unistd.h>

#include <boost/crc.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "librho/util/error.h"

namespace fs = std::filesystem;

namespace rho {
namespace {

bool is_event_file(const fs::path& p) { return p.filename().string().rfind("events.out.tfevents.", 0) == 0; }

std::string event_file_name() {
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::system_clock::now().time_since_epoch()).count();
  return fmt::format("events.out.tfevents.{}.{}.{}.librho", secs, host, ::getpid());
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// SLM's statistics are grouped apart from the optimisation's; everything else is train/<key>.
constexpr std::string_view kSlmKeys[] = {"selected_fraction", "kept_score", "dropped_score"};
// Keys of a train line that are no scalars of their own.
constexpr std::string_view kNotScalars[] = {"type", "step", "time", "skipped"};
// Keys of an eval line shown per set.
constexpr std::string_view kEvalKeys[] = {"loss", "ppl", "reference_loss", "gap"};

template <size_t N>
bool among(std::string_view key, const std::string_view (&list)[N]) {
  for (auto k : list)
    if (k == key) return true;
  return false;
}

// The protobuf wire format of the messages written, field numbers as in TensorBoard's event.proto, summary.proto
// and histogram.proto: Event {1: double wall_time, 2: int64 step, 3: string file_version, 5: Summary summary},
// Summary {1: repeated Value value}, Value {1: string tag, 2: float simple_value, 5: HistogramProto histo},
// HistogramProto {1 min, 2 max, 3 num, 4 sum, 5 sum_squares: double; 6 bucket_limit, 7 bucket: packed double}.
// (Written here rather than with libprotobuf: Debian's sentencepiece carries its own protobuf runtime, and a
// second one in the same process fails its version check.)
namespace wire {
enum Type : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void key(std::string& out, uint32_t field, Type type) { varint(out, (field << 3) | type); }
template <class T>
void fixed(std::string& out, T v) {  // little-endian, as x86-64 and aarch64 store it
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void f64(std::string& out, uint32_t field, double v) {
  key(out, field, kFixed64);
  fixed(out, v);
}
void bytes(std::string& out, uint32_t field, std::string_view v) {
  key(out, field, kBytes);
  varint(out, v.size());
  out.append(v);
}
void packed(std::string& out, uint32_t field, const std::vector<double>& v) {
  std::string body;
  for (double x : v) fixed(body, x);
  bytes(out, field, body);
}
// An Event around a Summary (or a file version), with the step and time.
std::string event(double wall_time, int64_t step, uint32_t what_field, std::string_view what) {
  std::string e;
  f64(e, 1, wall_time);
  key(e, 2, kVarint);
  varint(e, static_cast<uint64_t>(step));
  bytes(e, what_field, what);
  return e;
}
}  // namespace wire

}  // namespace

uint32_t masked_crc32c(const void* data, size_t size) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  const uint32_t c = crc.checksum();
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

EventFileWriter::EventFileWriter(const std::string& path) : path_(path), out_(path, std::ios::binary | std::ios::trunc) {
  if (!out_) throw Error(fmt::format("{}: cannot create the TensorBoard event file", path));
  write_record(wire::event(now_seconds(), 0, 3, "brain.Event:2"));
  flush();
}

void EventFileWriter::write_record(const std::string& bytes) {
  char header[12];
  const uint64_t len = bytes.size();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  const uint32_t len_crc = masked_crc32c(header, 8);
  const uint32_t data_crc = masked_crc32c(bytes.data(), bytes.size());
  for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<char>((len_crc >> (8 * i)) & 0xff);
  char footer[4];
  for (int i = 0; i < 4; ++i) footer[i] = static_cast<char>((data_crc >> (8 * i)) & 0xff);
  out_.write(header, sizeof header);
  out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out_.write(footer, sizeof footer);
  if (!out_) throw Error(fmt::format("{}: write failed", path_));
}

void EventFileWriter::write_scalars(int64_t step, double wall_time, const std::vector<Scalar>& scalars) {
  if (scalars.empty()) return;
  std::string summary;
  for (const auto& s : scalars) {
    std::string value;
    wire::bytes(value, 1, s.tag);
    wire::key(value, 2, wire::kFixed32);
    wire::fixed(value, static_cast<float>(s.value));
    wire::bytes(summary, 1, value);
  }
  write_record(wire::event(wall_time, step, 5, summary));
}

void EventFileWriter::write_histogram(int64_t step, double wall_time, const std::string& tag, const Histogram& h) {
  std::string histo;
  wire::f64(histo, 1, h.min);
  wire::f64(histo, 2, h.max);
  wire::f64(histo, 3, h.num);
  wire::f64(histo, 4, h.sum);
  wire::f64(histo, 5, h.sum_squares);
  wire::packed(histo, 6, h.limits);
  wire::packed(histo, 7, h.counts);
  std::string value, summary;
  wire::bytes(value, 1, tag);
  wire::bytes(value, 5, histo);
  wire::bytes(summary, 1, value);
  write_record(wire::event(wall_time, step, 5, summary));
}

void EventFileWriter::flush() {
  out_.flush();
  if (!out_) throw Error(fmt::format("{}: write failed", path_));
}

std::string train_scalar_tag(std::string_view key) {
  return fmt::format("{}/{}", among(key, kSlmKeys) ? "slm" : "train", key);
}

TensorBoardLog::TensorBoardLog(const std::string& dir, const std::string& replay_log) {
  std::vector<fs::path> old;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && is_event_file(entry.path())) old.push_back(entry.path());
  const auto final_path = fs::path(dir) / event_file_name();
  if (replay_log.empty() || !fs::exists(replay_log)) {
    for (const auto& p : old) fs::remove(p);
    writer_ = std::make_unique<EventFileWriter>(final_path.string());
    return;
  }
  // The replay is written under a name TensorBoard ignores, then takes the old files' place.
  const auto tmp = fs::path(dir) / ".tensorboard-replay.tmp";
  writer_ = std::make_unique<EventFileWriter>(tmp.string());
  std::ifstream in(replay_log);
  for (std::string line; std::getline(in, line);) write_line(line);
  writer_->flush();
  for (const auto& p : old) fs::remove(p);
  fs::rename(tmp, final_path);
  writer_->renamed(final_path.string());  // the open file goes on under its new name
}

Histogram histogram_from_log_line(const nlohmann::json& j, const std::string& where) {
  auto need = [&](const char* key) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number()) throw Error(fmt::format("{}: the histogram line has no number '{}'", where, key));
    return it->get<double>();
  };
  Histogram h;
  h.min = need("min");
  h.max = need("max");
  h.num = need("num");
  h.sum = j.value("sum", 0.0);
  h.sum_squares = j.value("sum_squares", 0.0);
  h.limits = j.value("limits", std::vector<double>());
  h.counts = j.value("counts", std::vector<double>());
  if (h.limits.size() != h.counts.size())
    throw Error(fmt::format("{}: a histogram with {} limits and {} counts", where, h.limits.size(), h.counts.size()));
  return h;
}

void TensorBoardLog::write(std::string_view json_line) {
  write_line(json_line);
  writer_->flush();
}

void TensorBoardLog::write_line(std::string_view json_line) {
  const auto j = nlohmann::json::parse(json_line, nullptr, false);
  if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) return;  // e.g. a torn last line
  const auto step = j["step"].get<int64_t>();
  const double time = j.contains("time") && j["time"].is_number() ? j["time"].get<double>() : now_seconds();
  const auto type = j.value("type", std::string());
  std::vector<EventFileWriter::Scalar> scalars;
  if (type == "train") {
    for (const auto& [key, value] : j.items())
      if (value.is_number() && !among(key, kNotScalars)) scalars.push_back({train_scalar_tag(key), value.get<double>()});
  } else if (type == "eval") {
    const auto set = j.value("set", std::string("eval"));
    for (auto key : kEvalKeys)
      if (auto it = j.find(std::string(key)); it != j.end() && it->is_number())
        scalars.push_back({fmt::format("eval/{}/{}", set, key), it->get<double>()});
  } else if (type == "histogram") {
    try {
      writer_->write_histogram(step, time, j.value("tag", std::string("histogram")),
                               histogram_from_log_line(j, "histogram line"));
    } catch (const Error&) {  // a malformed line is left out, as a torn one is
    }
  }
  writer_->write_scalars(step, time, scalars);
}

}  // namespace rho
