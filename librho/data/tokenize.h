#pragma once
// Tokenising a corpus into a token dataset (the library side of rho_tokenize): documents are read in order,
// encoded by worker threads with SentencePiece, and written in input order as [BOS] ids EOS into fixed-size
// shards, so the output depends on the inputs and settings only, never on the thread count or on interruptions.
//
// Resuming: after each shard, progress.json (written atomically) records the shards so far and where the input
// continues (file, byte offset, line, tokens of a document already written). A rerun in the same folder keeps the
// shards that still match their recorded size and sha256 and continues from there; manifest.json is written
// last and progress.json removed after it, so a folder without the manifest, or with progress.json, holds an
// unfinished run.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "librho/data/corpus.h"
#include "librho/data/sp_tokenizer.h"
#include "librho/data/manifest.h"

namespace rho {

struct TokenizeOptions {
  std::vector<std::string> inputs;  // files, folders, globs
  std::string out_dir;
  std::string tokenizer;             // an existing SentencePiece .model, copied into out_dir; empty: train one
  int64_t train_vocab_size = 0;      // training: vocabulary size (the model is saved as out_dir/tokenizer.model)
  std::string train_model_type = "unigram";      // unigram, bpe, word or char
  int64_t train_max_sentences = 2'000'000;       // training reads the corpus's first lines, up to this many
  CorpusOptions corpus;
  int64_t shard_tokens = 100'000'000;
  int threads = 0;                   // encoding threads; 0: one per CPU this process may use (usable_cpus)
  SpTokenizer::Engine sp_engine = SpTokenizer::Engine::Auto;  // Library: SentencePiece's own encoder (same ids)
  bool skip_bad_input = false;       // false: the first bad record stops the run (an error naming file and line)
  bool overwrite = false;            // replace a complete dataset, or discard an interrupted run, in out_dir
  bool progress = true;              // stderr: a bar on a terminal, otherwise a line every few seconds
  // Called after each shard and progress.json are durable, with the number of shards so far (tests use it to
  // kill the process at a deterministic point).
  std::function<void(int64_t)> on_shard_committed;
};

struct TokenizeSummary {
  TokenManifest manifest;
  std::vector<std::string> files;
  int64_t resumed_shards = 0;  // shards kept from an interrupted run
  uint64_t bytes_read = 0;     // input bytes (as stored: compressed) read by this run
  int64_t tokens_written = 0;  // tokens written by this run
  double seconds = 0;
};

TokenizeSummary tokenize_corpus(const TokenizeOptions& options);

}  // namespace rho
