// rho_tokenize: turn a text corpus into a token dataset (shards + manifest.json) for the loader.
//   rho_tokenize data/*.jsonl.zst --tokenizer llama2.model --out ds
//   rho_tokenize gsm8k/train.jsonl --field question --field answer --train-tokenizer --vocab-size 512 --out ds
// Rerunning the same command after an interruption resumes where the last complete shard ended.
#include <signal.h>

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "librho/data/tokenize.h"
#include "librho/util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"rho_tokenize: tokenise JSON Lines or text files into a token dataset"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  rho::TokenizeOptions o;
  std::vector<std::string> fields;
  std::string format = "auto", unit = "file", on_error = "stop", sp_encoder = "auto";
  bool train = false, quiet = false;
  int64_t kill_after = 0;
  app.add_option("inputs", o.inputs, "files, folders or glob patterns (.gz and .zst are decompressed; .parquet and .arrow are read by column)")->required();
  app.add_option("--out", o.out_dir, "dataset folder to write (or to resume)")->required();
  auto* tok = app.add_option("--tokenizer", o.tokenizer, "SentencePiece .model or Hugging Face tokenizer.json to encode with");
  auto* tr = app.add_flag("--train-tokenizer", train, "train a SentencePiece model on the corpus first");
  tok->excludes(tr);
  app.add_option("--vocab-size", o.train_vocab_size, "vocabulary size of a trained tokenizer")->default_val(32000);
  app.add_option("--model-type", o.train_model_type, "trained tokenizer: unigram, bpe, word or char")
      ->default_val("unigram");
  app.add_option("--train-sentences", o.train_max_sentences, "trained tokenizer: lines of the corpus to learn from")
      ->default_val(o.train_max_sentences);
  app.add_option("--field", fields, "JSON field(s) or Parquet/Arrow column(s) holding the text, joined by newlines")
      ->default_str("text");
  app.add_option("--format", format, "auto (by extension: .jsonl/.json/.ndjson), jsonl or text")
      ->check(CLI::IsMember({"auto", "jsonl", "text"}));
  app.add_option("--text-unit", unit, "plain text: one document per file or per line")
      ->check(CLI::IsMember({"file", "line"}));
  app.add_option("--shard-tokens", o.shard_tokens, "tokens per shard")->default_val(o.shard_tokens);
  app.add_option("--threads", o.threads, "encoding threads (0: one per CPU this process may use)")->default_val(0);
  app.add_option("--sp-encoder", sp_encoder, "SentencePiece models: auto (librho's encoder for BPE and unigram models, the library for others) or library (the same ids, for comparison)")
      ->check(CLI::IsMember({"auto", "library"}));
  app.add_option("--on-error", on_error, "bad input: stop, or skip it and count it")
      ->check(CLI::IsMember({"stop", "skip"}));
  app.add_flag("--overwrite", o.overwrite, "replace a complete dataset, or an interrupted run, in --out");
  app.add_flag("--quiet", quiet, "no progress display");
  // Tests only: SIGKILL this process once N shards are durable, to exercise resuming at a known point.
  app.add_option("--test-kill-after-shards", kill_after)->group("");
  CLI11_PARSE(app, argc, argv);

  if (!fields.empty()) o.corpus.fields = fields;
  o.corpus.format = format == "jsonl" ? rho::InputFormat::JsonLines
                    : format == "text" ? rho::InputFormat::Text : rho::InputFormat::Auto;
  o.corpus.text_unit = unit == "line" ? rho::TextUnit::Line : rho::TextUnit::File;
  o.skip_bad_input = on_error == "skip";
  o.sp_engine = sp_encoder == "library" ? rho::SpTokenizer::Engine::Library : rho::SpTokenizer::Engine::Auto;
  o.progress = !quiet;
  if (!train && o.tokenizer.empty()) {
    std::cerr << "rho_tokenize: error: give --tokenizer MODEL or --train-tokenizer\n";
    return 1;
  }
  if (!train) o.train_vocab_size = 0;
  if (kill_after > 0)
    o.on_shard_committed = [kill_after](int64_t shards) {
      if (shards >= kill_after) ::raise(SIGKILL);
    };

  try {
    const auto s = rho::tokenize_corpus(o);
    const auto& m = s.manifest;
    const double secs = std::max(s.seconds, 1e-9);
    std::cout << fmt::format(
        "rho_tokenize: wrote {}: {} tokens ({}) in {} shard(s), {} documents from {} file(s)\n"
        "  tokenizer {} (vocab {}, bos {}, eos {})\n"
        "  skipped: {} bad record(s), {} empty file(s)\n"
        "  this run: {} tokens from {:.1f} MB in {:.1f}s ({:.1f} MB/s, {:.0f} tokens/s){}\n",
        o.out_dir, m.num_tokens(), m.dtype, m.shards.size(), m.num_documents(), s.files.size(), m.tokenizer_name,
        m.vocab_size, m.bos_id, m.eos_id, m.skipped_documents, m.skipped_files, s.tokens_written,
        s.bytes_read / 1e6, s.seconds, s.bytes_read / 1e6 / secs, s.tokens_written / secs,
        s.resumed_shards ? fmt::format(", after {} shard(s) kept from an interrupted run", s.resumed_shards) : "");
  } catch (const std::exception& e) {
    std::cerr << "rho_tokenize: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
