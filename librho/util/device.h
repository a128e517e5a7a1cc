#pragma once
// Which device a run uses: the auto|cpu|cuda choice of configs and --device flags, resolved in one place.
#include <c10/core/Device.h>

#include <string>
#include <utility>

namespace rho {

enum class DeviceChoice { Auto, Cpu, Cuda };
inline constexpr std::pair<DeviceChoice, const char*> kDeviceChoiceNames[] = {
    {DeviceChoice::Auto, "auto"}, {DeviceChoice::Cpu, "cpu"}, {DeviceChoice::Cuda, "cuda"}};
std::string to_string(DeviceChoice v);
DeviceChoice parse_device_choice(const std::string& s);  // auto | cpu | cuda, else an error naming them
// The device a choice means here: auto is CUDA (device 0) when one is present; cuda without one is an error
// naming `what` (the config key or flag that asked for it).
at::Device resolve_device(DeviceChoice choice, const std::string& what = "device");
inline at::Device resolve_device(const std::string& choice, const std::string& what = "--device") {
  return resolve_device(parse_device_choice(choice), what);
}

}  // namespace rho
