#include "librho/util/device.h"

#include <fmt/format.h>
#include <torch/cuda.h>

#include <utility>

#include "librho/util/enum_names.h"
#include "librho/util/error.h"

namespace rho {
std::string to_string(DeviceChoice v) { return enum_name(kDeviceChoiceNames, v); }

DeviceChoice parse_device_choice(const std::string& s) {
  if (const auto e = enum_from_name(kDeviceChoiceNames, s)) return *e;
  throw Error(fmt::format("device '{}' is not one of {}", s, enum_names(kDeviceChoiceNames)));
}

at::Device resolve_device(DeviceChoice choice, const std::string& what) {
  const bool have = torch::cuda::is_available();
  if (choice == DeviceChoice::Cuda && !have) throw Error(fmt::format("{} is cuda but no CUDA device is present", what));
  return (choice == DeviceChoice::Cuda || (choice == DeviceChoice::Auto && have)) ? at::Device(at::kCUDA)
                                                                                  : at::Device(at::kCPU);
}

}  // namespace rho
