// A training loop of your own around librho's SLM API (docs/training.md, "Your own training loop").
//   slm_loop CONFIG.yaml OUT_DIR
// Reads a rho_pretrain config (stage slm, one process, CPU or CUDA; every slm, optim and precision key as
// rho_pretrain reads it; no evaluation or checkpoints), trains it with the library's pieces and
// saves the weights in Hugging Face layout in OUT_DIR. On the CPU the weights equal rho_pretrain's for the same
// config bit for bit (ctest install_consumer checks it for micro-batch and step scope): change any line below to
// try your own idea, and the rest stays the paper's method.
#include <librho/librho.h>
#include <librho/model/autocast.h>

#include <iostream>
#include <limits>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: slm_loop CONFIG.yaml OUT_DIR\n";
    return 2;
  }
  try {
    const auto cfg = rho::TrainConfig::from_yaml_file(argv[1]);
    const at::Device device = rho::resolve_device(cfg.device);

    // The model, from the run's seed (as rho_pretrain initialises it).
    rho::Llama model(cfg.model);
    model->reset_parameters(cfg.seed);
    model->activation_checkpointing = cfg.activation_checkpointing;
    model->to(device);

    // Data: the loader's windows, deterministic from the seed.
    auto data = std::make_shared<rho::TokenDataset>(rho::TokenDataset::open(cfg.train_data));
    rho::LoaderOptions lo;
    lo.seq_len = cfg.seq_len;
    lo.batch_size = cfg.batch_size;
    lo.seed = cfg.seed;
    rho::BatchLoader loader(data, lo);
    const int64_t eos = data->manifest().eos_id;

    // SLM: where reference losses come from, and the selective loss.
    rho::ReferenceOptions ro;
    ro.loss_dirs = cfg.reference_losses;
    ro.model_dirs = cfg.reference_model;
    ro.self = cfg.self_reference;
    ro.combine = cfg.reference_combine;
    ro.ema_decay = cfg.ema_decay;
    // train.precision: bf16 autocast on CUDA by default, on the CPU when asked (as rho_pretrain).
    const bool autocast = cfg.precision == rho::Precision::Bf16 || (cfg.precision == rho::Precision::Auto && device.is_cuda());
    rho::ReferenceSource reference(ro, *data, *model, device, autocast);
    rho::SLMLoss slm(cfg.slm);

    // AdamW with rho_pretrain's parameter groups.
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (auto& item : model->named_parameters()) named.emplace_back(item.key(), item.value());
    rho::AdamW optim(rho::adamw_groups(named, cfg.weight_decay, cfg.decay_norms_and_embeddings), cfg.beta1,
                     cfg.beta2, cfg.eps);

    for (int64_t step = 0; step < cfg.max_steps; ++step) {
      // 1. The step's micro-batches, what counts in each, and their reference losses.
      std::vector<at::Tensor> tokens;
      std::vector<rho::MicroBatchTargets> targets;
      for (int64_t i = 0; i < cfg.grad_accum; ++i) {
        const rho::Batch b = loader.next();
        tokens.push_back(b.tokens.to(device));
        targets.push_back({rho::valid_targets(b.inputs().to(device), eos, cfg.exclude_boundary),
                           reference.losses(b, tokens.back())});
      }
      auto token_loss = [&](int64_t i) {
        rho::AutocastScope ac(device.type(), at::kBFloat16, autocast);
        return model->token_loss(tokens[i].narrow(1, 0, cfg.seq_len), tokens[i].narrow(1, 1, cfg.seq_len))
            .to(at::kFloat);
      };

      // 2. The selection (plain CLM before slm.start_step): scopes step and global choose over every micro-batch
      //    first (a no-grad forward each).
      rho::SLMStep plan = step >= cfg.slm_start_step ? slm->begin(step, std::move(targets)) : [&] {
        std::vector<at::Tensor> valid;
        for (auto& t : targets) valid.push_back(t.valid);
        return rho::SLMStep::causal(std::move(valid));
      }();
      if (plan.needs_scores())
        for (int64_t i = 0; i < cfg.grad_accum; ++i) {
          at::NoGradGuard no_grad;
          plan.score(i, token_loss(i));
        }

      // 3. Each micro-batch's loss (already divided by the step's total weight), backward.
      at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
      for (int64_t i = 0; i < cfg.grad_accum; ++i) {
        auto out = plan.loss(i, token_loss(i));
        out.loss.backward();
        loss_sum += out.loss.detach().to(at::kDouble);
      }

      // 4. Clip, step (a non-finite loss or norm leaves the weights alone), drop the gradients.
      const auto norm = rho::clip_grad_norm(model->parameters(), cfg.grad_clip > 0 ? cfg.grad_clip : std::numeric_limits<double>::infinity());
      const auto found_inf = (~at::isfinite(loss_sum) | ~at::isfinite(norm)).to(at::kFloat);
      optim.step(cfg.lr_at(step), found_inf);
      reference.after_step(*model, found_inf);
      for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();

      if ((step + 1) % cfg.log_every == 0) {
        const auto stats = plan.tally().read();
        std::cout << "step " << step + 1 << " loss " << loss_sum.item<double>() << " kept "
                  << stats.effective_fraction() << "\n";
      }
    }
    rho::save_hf_model(*model, argv[2]);
    std::cout << "saved " << argv[2] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "slm_loop: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
