// libFuzzer target: the JSON Lines reader (CorpusReader over a .jsonl file, record_text for the "text" field).
// Input: the file's bytes. Invariants: records come in file order with increasing offsets and lines, none holds a
// newline, record positions add up (the next record starts where the previous one's search ended); reading again
// from a record's end position (what rho_tokenize does on resume) yields exactly the records that followed it; a
// record's text is accepted only if it is valid UTF-8. Rejection must be a rho::Error or an error string.
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "librho/data/corpus.h"
#include "librho/util/error.h"

namespace {

std::vector<rho::Record> read_all(const std::string& path, rho::CorpusPosition start) {
  rho::CorpusReader reader({path}, rho::CorpusOptions{}, start);
  std::vector<rho::Record> out;
  rho::Record r;
  while (reader.next(r)) out.push_back(r);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rho_fuzz::check;
  const auto path = rho_fuzz::scratch_path("input.jsonl");
  rho_fuzz::write_scratch(path, data, size);
  std::vector<rho::Record> records;
  try {
    records = read_all(path, {});
  } catch (const rho::Error&) {
    return 0;
  }
  check(!records.empty(), "no record at all (an empty file must give one empty_file record)");
  uint64_t last_end = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (r.empty_file) {
      check(records.size() == 1 && r.raw.empty(), "empty_file record among others");
      continue;
    }
    check(r.raw.find('\n') == std::string::npos, "a record holds a newline");
    check(r.pos.file == 0 && r.pos.offset >= last_end && r.pos.offset < size, "record offsets out of order");
    check(std::string(reinterpret_cast<const char*>(data) + r.pos.offset, r.raw.size()) == r.raw,
          "a record's bytes differ from the file's at its offset");
    last_end = r.pos.offset + r.raw.size();
    std::string text, error;
    int64_t error_line = 0;
    rho::Record copy = r;
    const bool ok = rho::record_text(copy, true, {"text"}, text, error, error_line);
    check(ok || !error.empty(), "a rejected record without a reason");
    if (ok) check(rho::find_invalid_utf8(text) == std::string_view::npos, "accepted text is not valid UTF-8");
  }
  // Resume from the middle: the records after the cut must be the same.
  if (records.size() >= 2 && !records[0].empty_file) {
    const size_t cut = records.size() / 2;
    const auto rest = read_all(path, records[cut - 1].end);
    check(rest.size() == records.size() - cut, "resuming gives a different number of records");
    for (size_t i = 0; i < rest.size(); ++i)
      check(rest[i].raw == records[cut + i].raw && rest[i].pos == records[cut + i].pos,
            "resuming gives different records");
  }
  return 0;
}
