// libFuzzer target: the Parquet and Arrow IPC readers (librho's Arrow plugin, data/columnar_arrow.cpp, compiled in).
// Input: the first byte picks the format (even: Parquet, odd: Arrow IPC), the rest is the file's bytes. Invariants:
// rows come in order (each unit starts where the previous one ended, or at a later row group's start after a bad
// one); a unit is text or an error with a reason, never both; a whole-file error ends the file; reading again from a
// row where reading went on (what rho_tokenize does on resume) yields exactly the units that followed it.
// Nothing may crash or throw: bad input is returned as an error row.
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "librho/data/columnar.h"

extern "C" rho::ColumnarReader* rho_columnar_open(const std::string& path, rho::ColumnarKind kind,
                                                  const std::vector<std::string>& columns, int64_t start_row);

namespace {

std::vector<rho::ColumnarRow> read_all(const std::string& path, rho::ColumnarKind kind, int64_t start) {
  std::unique_ptr<rho::ColumnarReader> reader(rho_columnar_open(path, kind, {"text"}, start));
  std::vector<rho::ColumnarRow> out;
  rho::ColumnarRow r;
  while (reader->next(r) && out.size() < 100000) out.push_back(r);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rho_fuzz::check;
  if (size == 0) return 0;
  const bool parquet = data[0] % 2 == 0;
  const auto kind = parquet ? rho::ColumnarKind::Parquet : rho::ColumnarKind::Arrow;
  const auto path = rho_fuzz::scratch_path(parquet ? "input.parquet" : "input.arrow");
  rho_fuzz::write_scratch(path, data + 1, size - 1);
  const auto rows = read_all(path, kind, 0);
  int64_t next = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    check(r.error.empty() || r.text.empty(), "a unit with both text and an error");
    check(r.row >= next, "units out of order");
    if (r.next_row < 0) {
      check(!r.error.empty() && i + 1 == rows.size(), "a whole-file unit that is no error, or not the last");
      break;
    }
    check(r.next_row > r.row, "a unit that does not advance");
    next = r.next_row;
  }
  // Resume where the first half ended: the units after it must be the same.
  if (rows.size() >= 2 && rows[rows.size() / 2 - 1].next_row > 0) {
    const size_t cut = rows.size() / 2;
    const auto rest = read_all(path, kind, rows[cut - 1].next_row);
    check(rest.size() == rows.size() - cut, "resuming gives a different number of units");
    for (size_t i = 0; i < rest.size(); ++i)
      check(rest[i].row == rows[cut + i].row && rest[i].text == rows[cut + i].text &&
                rest[i].error == rows[cut + i].error,
            "resuming gives a different unit");
  }
  return 0;
}
