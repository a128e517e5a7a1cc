#pragma once
// Enums named in configs and logs: a table of {value, name} pairs per enum, and the lookups over it. Each caller
// words its own error for a name that is not in the table (enum_names lists the ones that are).
#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace rho {

template <class E, size_t N>
std::optional<E> enum_from_name(const std::pair<E, const char*> (&table)[N], const std::string& name) {
  for (const auto& [value, n] : table)
    if (name == n) return value;
  return std::nullopt;
}

template <class E, size_t N>
const char* enum_name(const std::pair<E, const char*> (&table)[N], E e) {
  for (const auto& [value, n] : table)
    if (value == e) return n;
  return "?";
}

// "a, b, c": the names, in table order.
template <class E, size_t N>
std::string enum_names(const std::pair<E, const char*> (&table)[N]) {
  std::string all;
  for (const auto& [value, n] : table) all += all.empty() ? n : std::string(", ") + n;
  return all;
}

}  // namespace rho
