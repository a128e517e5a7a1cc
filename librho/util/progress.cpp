#include "librho/util/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace rho {

std::string human_count(double n) {
  const char* units[] = {"", "k", "M", "G", "T"};
  int u = 0;
  while (n >= 1000 && u < 4) {
    n /= 1000;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f}", n) : fmt::format("{:.2f}{}", n, units[u]);
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(::isatty(STDERR_FILENO)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since < (tty_ ? 0.2 : 5.0)) return;
  last_draw_ = now;
  draw(done, extra, false);
}

void Progress::finish(const std::string& extra) { draw(total_ > 0 ? total_ : 0, extra, true); }

void Progress::draw(int64_t done, const std::string& extra, bool final) {
  const double t = elapsed_seconds();
  const double rate = t > 0 ? done / t : 0;
  std::string line = fmt::format("{} {} {} {}/s", label_, human_count(done), unit_, human_count(rate));
  if (total_ > 0) {
    const double f = std::min(1.0, static_cast<double>(done) / total_);
    const int width = 24, fill = static_cast<int>(f * width);
    const double eta = rate > 0 ? (total_ - done) / rate : 0;
    line = fmt::format("{} [{}{}] {:5.1f}% {}/{} {} {}/s ETA {:.0f}s", label_, std::string(fill, '#'),
                       std::string(width - fill, '.'), 100 * f, human_count(done), human_count(total_), unit_,
                       human_count(rate), final ? 0.0 : eta);
  }
  if (!extra.empty()) line += "  " + extra;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace rho
