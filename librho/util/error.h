#pragma once
// librho reports bad input with rho::Error: the message names the file, field or tensor at fault.
#include <stdexcept>
#include <string>

namespace rho {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace rho
