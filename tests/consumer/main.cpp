// Builds a tiny librho model, runs it, saves it in Hugging Face layout and loads it back.
#include <librho/librho.h>

#include <iostream>

int main(int argc, char** argv) {
  rho::LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  rho::Llama model(c);
  auto x = at::randint(0, 50, {1, 8});
  auto logits = model->forward(x);
  rho::save_hf_model(*model, argv[1]);
  auto again = rho::load_hf_model(argv[1]);
  const bool same = at::equal(again->forward(x), logits);
  std::cout << "consumer: " << model->num_parameters() << " parameters, round trip " << (same ? "ok" : "FAILED")
            << "\n";
  return same ? 0 : 1;
}
