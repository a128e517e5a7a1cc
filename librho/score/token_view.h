#pragma once
// The token view: a stretch of a corpus rendered as an HTML page, each token coloured by its reference loss,
// by its excess loss against a second model, or by whether SLM would keep it at a given ratio (as the Rho-1
// paper's Figure 2), with every number on hover. Users look at it to see what the selection does.
#include <cstdint>
#include <string>
#include <vector>

namespace rho {

struct TokenViewToken {
  std::string text;        // decoded piece (leading space kept)
  double reference = 0;    // reference loss (NaN: none)
  double current = 0;      // second model's loss (NaN when there is none)
};

struct TokenViewOptions {
  std::string title = "librho token view";
  std::string subtitle;    // e.g. which data, which models
  double ratio = 0.6;      // SLM ratio for the "kept" colouring (top ratio of the shown tokens by excess loss)
};

// Tokens [start, start + length) of a token dataset (clamped to it) with their losses from rho_score outputs for
// it (`current_dir` empty: none), decoded with `tokenizer` (empty: the dataset's own). Sets `subtitle` to what was
// shown. Throws rho::Error when a loss dataset does not belong to the token dataset.
std::vector<TokenViewToken> token_view_tokens(const std::string& data_dir, const std::string& losses_dir,
                                              const std::string& current_dir, std::string tokenizer, int64_t start,
                                              int64_t length, std::string* subtitle = nullptr);

// A self-contained page (inline CSS, no scripts needed to read it; a few lines of script switch views).
std::string render_token_view(const std::vector<TokenViewToken>& tokens, const TokenViewOptions& options);

// SentencePiece pieces as display text: "▁" -> space, byte pieces <0xNN> -> the byte.
std::string piece_to_text(const std::string& piece);

}  // namespace rho
