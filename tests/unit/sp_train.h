#pragma once
// Trains a SentencePiece model on lines held in memory (the unit tests and fuzz/fuzz_sp_encoder.cpp compare
// librho's encoders with the library on such models). Header only: the fuzz build compiles it without the tests.
#include <sentencepiece_trainer.h>

#include <string>
#include <unordered_map>
#include <vector>

namespace rho_test {

// The serialized model, or the trainer's error in `error` and an empty string. `args` are the trainer's flags;
// unless they say otherwise it trains quietly on one thread (the same lines give the same model).
inline std::string train_sentencepiece(const std::vector<std::string>& lines,
                                       std::unordered_map<std::string, std::string> args, std::string* error) {
  args.emplace("minloglevel", "2");
  args.emplace("num_threads", "1");
  class Lines : public sentencepiece::SentenceIterator {
   public:
    explicit Lines(const std::vector<std::string>& lines) : lines_(lines) {}
    bool done() const override { return i_ >= lines_.size(); }
    void Next() override { ++i_; }
    const std::string& value() const override { return lines_[i_]; }
    sentencepiece::util::Status status() const override { return {}; }

   private:
    const std::vector<std::string>& lines_;
    size_t i_ = 0;
  } it(lines);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  *error = status.ok() ? "" : status.ToString();
  return status.ok() ? model : std::string();
}

}  // namespace rho_test
