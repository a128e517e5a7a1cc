#pragma once
// Token categories of a training run (the Rho-1 paper's analysis of how token losses move): every token of a
// fixed sample is scored by each checkpoint; a least-squares line through its losses over training tokens
// gives a fitted start and end loss, each high or low against a threshold:
//   H->H (stays hard), L->H (gets worse), H->L (learned), L->L (easy all along).
#include <ATen/core/Tensor.h>

#include <array>
#include <limits>
#include <string>
#include <vector>

#include "librho/data/token_dataset.h"

namespace rho {

enum TokenCategory { HighHigh = 0, LowHigh = 1, HighLow = 2, LowLow = 3 };
std::string to_string(TokenCategory c);  // "H->H", "L->H", "H->L", "L->L"

struct TokenCategoryReport {
  std::vector<std::string> checkpoints;   // oldest first
  std::vector<double> x;                  // training tokens seen at each checkpoint
  int64_t tokens = 0;                     // tokens classified
  double threshold = 0;                   // nats: fitted loss above it is "high"
  std::array<int64_t, 4> counts{};        // per TokenCategory
  std::array<std::vector<double>, 4> mean_loss;  // per category, the mean loss at each checkpoint
  double share(TokenCategory c) const { return tokens ? static_cast<double>(counts[c]) / tokens : 0; }
  std::string to_json() const;
  std::string table() const;
};

// Classifies the columns of `losses` [checkpoints, tokens] (fp32/fp64, >= 2 checkpoints at distinct x). A
// threshold that is NaN means the median fitted start loss: "high" = harder than the typical token at the start.
// (The median over starts and ends pooled would force H->H and L->L to equal shares.) To compare runs, give
// them one threshold.
TokenCategoryReport categorize_tokens(const at::Tensor& losses, const std::vector<double>& x, double threshold);

struct TokenCategoryOptions {
  int64_t seq_len = 256;
  int64_t windows = 64;    // the first `windows` windows of seq_len + 1 tokens of the dataset
  double threshold = std::numeric_limits<double>::quiet_NaN();
  std::string device = "auto";
  bool progress = true;
};

// Scores the sample with every checkpoint of a run directory (rho_pretrain's out_dir, at least two kept; set
// train.keep_checkpoints high enough) and classifies its tokens. Targets that follow an EOS are left out.
TokenCategoryReport token_categories(const std::string& run_dir, const TokenDataset& data,
                                     const TokenCategoryOptions& options);

}  // namespace rho
