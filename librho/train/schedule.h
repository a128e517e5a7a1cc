#pragma once
// The learning-rate schedule: linear warmup to the peak, then cosine, linear or constant down to min_lr at
// max_steps (optim.* in the run config).
#include <cstdint>
#include <string>
#include <utility>

namespace rho {

enum class Schedule { Cosine, Linear, Constant };  // after warmup
inline constexpr std::pair<Schedule, const char*> kScheduleNames[] = {
    {Schedule::Cosine, "cosine"}, {Schedule::Linear, "linear"}, {Schedule::Constant, "constant"}};
std::string to_string(Schedule v);

struct LrSchedule {
  double lr = 3e-4, min_lr = 3e-5;  // peak and final
  int64_t warmup_steps = 100, max_steps = 1000;
  Schedule kind = Schedule::Cosine;
  double at(int64_t step) const;  // the rate of optimizer step `step` (0-based)
};

}  // namespace rho
