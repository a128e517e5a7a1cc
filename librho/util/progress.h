#pragma once
// A progress line on stderr: rate, ETA and a bar; redrawn in place on a terminal, a plain line every
// few seconds otherwise (logs stay readable).
#include <chrono>
#include <cstdint>
#include <string>

namespace rho {

class Progress {
 public:
  // total <= 0: unknown (no bar, no ETA). `unit` names what is counted ("tok", "step").
  Progress(std::string label, int64_t total, std::string unit);
  // done: units finished so far; extra: text appended to the line (e.g. "loss 2.31").
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  double elapsed_seconds() const;

 private:
  void draw(int64_t done, const std::string& extra, bool final);
  std::string label_, unit_;
  int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string human_count(double n);  // 1234567 -> "1.23M"

}  // namespace rho
