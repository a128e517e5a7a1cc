#pragma once
// AutocastScope: mixed precision (torch autocast) for one device type over a C++ scope, as Python's
// `with torch.autocast(device, dtype)`: sets the state, counts the nesting, and on leaving the outermost scope
// clears autocast's cache of low-precision weight copies, so no copy outlives the weights it was made from (an
// optimizer step changes them in place). LibTorch has no such guard of its own.
#include <ATen/autocast_mode.h>

namespace rho {

class AutocastScope {
 public:
  // enabled = false turns autocast off for the device inside the scope (as `torch.autocast(..., enabled=False)`).
  AutocastScope(at::DeviceType device, at::ScalarType dtype, bool enabled = true)
      : device_(device),
        on_(enabled),
        was_enabled_(at::autocast::is_autocast_enabled(device)),
        was_dtype_(at::autocast::get_autocast_dtype(device)) {
    at::autocast::set_autocast_enabled(device_, on_);
    at::autocast::set_autocast_dtype(device_, dtype);
    if (on_) at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (on_ && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, was_enabled_);
    at::autocast::set_autocast_dtype(device_, was_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  at::DeviceType device_;
  bool on_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
};

}  // namespace rho
