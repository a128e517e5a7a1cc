#pragma once
// TensorBoard event files for a training run, so that `tensorboard --logdir RUNS` shows it live.
//
//   EventFileWriter  one events.out.tfevents.* file: TFRecord framing (little-endian length, masked CRC-32C of the
//                    length, the bytes, masked CRC-32C of the bytes) around Event protobufs
//   TensorBoardLog   a run's log lines (log.jsonl, one JSON object each) as TensorBoard scalars and histograms
//   Histogram        bucket counts of a set of values, as TensorBoard draws them (rho_pretrain: excess-loss scores)
//
// The event file is a view of log.jsonl, not a second record: every scalar comes from a log line, and a resumed
// run rewrites the file from its log (which --resume truncates to the checkpoint), so a run killed with -9 and
// resumed shows each step once. Tags: train/<key> and slm/<key> for a train line's numbers, eval/<set>/<key> for an
// eval line's, a histogram line's own tag.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rho {

struct Histogram {
  double min = 0, max = 0, num = 0, sum = 0, sum_squares = 0;
  std::vector<double> limits;  // the right edge of each bucket, increasing
  std::vector<double> counts;  // values in each bucket (limits[i-1], limits[i]]; the first takes min itself
};

// A "histogram" log line's histogram (sum and sum_squares default to 0). Throws rho::Error naming `where` when
// min, max or num is not a number or limits and counts differ in length. Read by TensorBoardLog and the report.
Histogram histogram_from_log_line(const nlohmann::json& line, const std::string& where);

// CRC-32C (Castagnoli) as TFRecord masks it: rotate right by 15, add 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

class EventFileWriter {
 public:
  // Creates `path` (truncating it) and writes the file-version event.
  explicit EventFileWriter(const std::string& path);
  struct Scalar {
    std::string tag;
    double value;
  };
  void write_scalars(int64_t step, double wall_time, const std::vector<Scalar>& scalars);
  void write_histogram(int64_t step, double wall_time, const std::string& tag, const Histogram& h);
  void flush();
  const std::string& path() const { return path_; }
  void renamed(std::string path) { path_ = std::move(path); }  // the file was moved while open

 private:
  void write_record(const std::string& bytes);
  std::string path_;
  std::ofstream out_;
};

class TensorBoardLog {
 public:
  // A fresh event file in `dir` (events.out.tfevents.<seconds>.<host>.<pid>.librho). Every other event file there
  // is removed; with `replay_log` (a log.jsonl), its lines are written first. The replay goes to a temporary name
  // renamed into place after the old files are gone, so an interruption never leaves a step twice.
  explicit TensorBoardLog(const std::string& dir, const std::string& replay_log = {});
  // One log line: train, eval and histogram lines become events (others, e.g. warnings, are skipped). Flushed.
  void write(std::string_view json_line);
  const std::string& path() const { return writer_->path(); }

 private:
  void write_line(std::string_view json_line);
  std::unique_ptr<EventFileWriter> writer_;
};

// The tag a train line's key is shown under (train/loss, slm/kept_score, ...).
std::string train_scalar_tag(std::string_view key);

}  // namespace rho
