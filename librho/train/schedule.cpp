#include "librho/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "librho/util/enum_names.h"

namespace rho {

std::string to_string(Schedule v) { return enum_name(kScheduleNames, v); }

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (kind == Schedule::Constant) return lr;
  const double span = std::max<int64_t>(max_steps - warmup_steps, 1);
  const double t = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  const double f = kind == Schedule::Cosine ? 0.5 * (1.0 + std::cos(M_PI * t)) : 1.0 - t;
  return min_lr + (lr - min_lr) * f;
}

}  // namespace rho
