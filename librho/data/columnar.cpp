// Parquet and Arrow IPC input (columnar.h): the readers live in librho's Arrow plugin (columnar_arrow.cpp,
// librho_columnar.so beside librho_data.so), loaded on the first such input, so librho itself needs no Arrow.
#include "librho/data/columnar.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <filesystem>
#include <mutex>

#include "librho/util/error.h"
#include "librho/util/text.h"

namespace rho {
namespace {

using OpenColumnar = ColumnarReader* (*)(const std::string&, ColumnarKind, const std::vector<std::string>&, int64_t);

struct ColumnarPlugin {
  OpenColumnar open = nullptr;
  std::string why;  // when it could not be loaded
};

// The plugin beside the librho this code is part of (the build tree's librho/ or the install's lib/); loaded once.
const ColumnarPlugin& columnar_plugin() {
  static ColumnarPlugin plugin;
  static std::once_flag once;
  std::call_once(once, [] {
    Dl_info self{};
    if (!::dladdr(reinterpret_cast<void*>(&columnar_kind), &self) || !self.dli_fname) {
      plugin.why = "cannot locate librho itself";
      return;
    }
    const auto path = (std::filesystem::path(self.dli_fname).parent_path() / "librho_columnar.so").string();
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // kept loaded: its readers' code lives there
    if (!handle) {
      plugin.why = ::dlerror();
      return;
    }
    plugin.open = reinterpret_cast<OpenColumnar>(::dlsym(handle, "rho_columnar_open"));
    if (!plugin.open) plugin.why = fmt::format("{}: no rho_columnar_open", path);
  });
  return plugin;
}

}  // namespace

ColumnarKind columnar_kind(const std::string& path) {
  const auto name = ascii_lower(path);
  for (const char* ext : {".parquet", ".pq"})
    if (ends_with(name, ext)) return ColumnarKind::Parquet;
  for (const char* ext : {".arrow", ".feather", ".ipc"})
    if (ends_with(name, ext)) return ColumnarKind::Arrow;
  return ColumnarKind::None;
}

std::string columnar_unavailable(const std::string& path) {
  const auto& plugin = columnar_plugin();
  if (plugin.open) return "";
  return fmt::format("{}: reading Parquet and Arrow needs librho's Arrow plugin, librho_columnar.so beside "
                     "librho_data.so ({}); it is built when CMake finds pyarrow (scripts/setup.sh installs it; "
                     "docs/building.md)", path, plugin.why);
}

std::unique_ptr<ColumnarReader> ColumnarReader::open(const std::string& path, ColumnarKind kind,
                                                     const std::vector<std::string>& columns, int64_t start_row) {
  if (kind == ColumnarKind::None) throw Error(fmt::format("{}: not a Parquet or Arrow file", path));
  if (const auto why = columnar_unavailable(path); !why.empty()) throw Error(why);
  return std::unique_ptr<ColumnarReader>(columnar_plugin().open(path, kind, columns, start_row));
}

}  // namespace rho
