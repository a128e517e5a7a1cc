#!/usr/bin/env python3
"""Parity between librho and Hugging Face transformers, both ways, on small random models of every family.

transformers -> librho: HF builds and saves a model (fp32, bf16, sharded); librho loads it and its logits and
per-token losses match HF's to 1e-5. librho -> transformers: librho initialises or re-saves a model; HF loads
it and its logits match librho's. Families: Llama (GQA/MQA/MHA, tied and untied, attention and MLP biases, RoPE
scaling linear and llama3), Mistral, Qwen2 (q/k/v biases, tied). Also: the parameter counts of
configs/model/*.yaml and of the published config.json files in tests/data/hf_configs equal HF's.
Exits 77 (skipped) when transformers is not installed.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import torch
    import torch.nn.functional as F
    import transformers
    from safetensors.torch import load_file, save_file
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED: {e}")
    sys.exit(77)

TOL = 1e-5


def run(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(map(str, args))}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def hf_logits(model_dir, tokens):
    m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(tokens[:, :-1]).logits


def rho_logits(rho_model, model_dir, tokens, work):
    tok_file, out_file = work / "tokens.safetensors", work / "out.safetensors"
    save_file({"tokens": tokens.contiguous()}, str(tok_file))
    run(rho_model, "logits", model_dir, "--tokens", tok_file, "--out", out_file)
    out = load_file(str(out_file))
    return out["logits"], out["token_loss"]


def check(name, a, b):
    diff = (a - b).abs().max().item()
    status = "ok" if diff <= TOL else "FAIL"
    print(f"  {status}  {name}: max |diff| = {diff:.2e}")
    return diff <= TOL


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rho-model", required=True)
    ap.add_argument("--configs", required=True)
    args = ap.parse_args()
    ok = True
    torch.manual_seed(0)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 16}  # head size 16: wavelengths below, inside and above the band
    variants = [
        dict(name="gqa-untied", num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0),
        dict(name="gqa-tied", num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0),
        dict(name="mha-untied", num_key_value_heads=4, tie_word_embeddings=False, rope_theta=10000.0),
        dict(name="mqa-tied", num_key_value_heads=1, tie_word_embeddings=True, rope_theta=10000.0),
        dict(name="llama-biases", num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
             attention_bias=True, mlp_bias=True),
        dict(name="llama3-rope", num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0,
             rope_scaling=llama3),
        dict(name="linear-rope", num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
             rope_scaling={"rope_type": "linear", "factor": 2.0}),
        dict(name="mistral", family=transformers.MistralConfig, num_key_value_heads=2, tie_word_embeddings=False,
             rope_theta=10000.0, sliding_window=4096),
        dict(name="qwen2", family=transformers.Qwen2Config, num_key_value_heads=2, tie_word_embeddings=True,
             rope_theta=1000000.0, use_sliding_window=False),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for v in variants:
            name = v.pop("name")
            print(f"[{name}]")
            family = v.pop("family", transformers.LlamaConfig)
            cfg = family(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5, **v)
            model = transformers.AutoModelForCausalLM.from_config(cfg).float().eval()
            with torch.no_grad():  # HF initialises norms to 1 and biases to 0: make them non-trivial
                for n, p in model.named_parameters():
                    if n.endswith("norm.weight") or n.endswith(".bias"):
                        p.add_(0.1 * torch.randn_like(p))
            tokens = torch.randint(0, 128, (3, 33))
            with torch.no_grad():
                ref = model(tokens[:, :-1]).logits
            ref_loss = F.cross_entropy(ref.reshape(-1, 128), tokens[:, 1:].reshape(-1), reduction="none").view(3, 32)

            # transformers -> librho: fp32, sharded, bf16
            d = work / f"{name}-hf"
            model.save_pretrained(d, safe_serialization=True)
            logits, loss = rho_logits(args.rho_model, d, tokens, work)
            ok &= check("HF fp32 -> librho logits", logits, ref)
            ok &= check("HF fp32 -> librho per-token loss", loss, ref_loss)
            ds = work / f"{name}-hf-sharded"
            model.save_pretrained(ds, safe_serialization=True, max_shard_size="40KB")
            assert (ds / "model.safetensors.index.json").exists()
            ok &= check("HF sharded -> librho logits", rho_logits(args.rho_model, ds, tokens, work)[0], ref)
            db = work / f"{name}-hf-bf16"
            model.to(torch.bfloat16).save_pretrained(db, safe_serialization=True)
            model.float()
            ok &= check("HF bf16 -> librho logits (vs HF on the same bf16 weights)",
                        rho_logits(args.rho_model, db, tokens, work)[0], hf_logits(db, tokens))

            # librho -> transformers: re-save through the librho module
            dr = work / f"{name}-rho"
            run(args.rho_model, "convert", d, "--out", dr)
            ok &= check("librho re-save -> HF logits", hf_logits(dr, tokens), ref)

            if family is not transformers.LlamaConfig or name in ("llama-biases", "llama3-rope", "linear-rope"):
                continue  # the init path below is the same for every family
            # librho -> transformers: a librho-initialised model
            yaml = work / f"{name}.yaml"
            yaml.write_text("\n".join([
                "model:", "  vocab_size: 128", "  hidden_size: 64", "  intermediate_size: 96", "  num_layers: 2",
                "  num_heads: 4", f"  num_kv_heads: {cfg.num_key_value_heads}", f"  rope_theta: {cfg.rope_theta}",
                "  rms_norm_eps: 1.0e-5", "  max_position_embeddings: 64",
                f"  tie_word_embeddings: {str(cfg.tie_word_embeddings).lower()}", ""]))
            di = work / f"{name}-init"
            run(args.rho_model, "init", yaml, "--seed", "5", "--out", di)
            ok &= check("librho init -> HF logits", hf_logits(di, tokens), rho_logits(args.rho_model, di, tokens, work)[0])

        print("[parameter counts: librho's YAML configs, and published config.json files read by both]")
        published = Path(__file__).resolve().parents[1] / "data" / "hf_configs"
        for path in sorted(Path(args.configs).glob("*.yaml")) + sorted(published.glob("*.json")):
            d = work / f"count-{path.name}"
            d.mkdir()
            if path.suffix == ".json":
                (d / "config.json").write_text(path.read_text())
                rho_count = json.loads(run(args.rho_model, "info", path))["parameters"]
            else:  # librho writes the YAML config as a config.json for transformers
                rho_count = json.loads(run(args.rho_model, "info", path, "--config-json",
                                           d / "config.json"))["parameters"]
            hf_cfg = transformers.AutoConfig.from_pretrained(d)
            with torch.device("meta"):
                hf_count = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_config(hf_cfg).parameters())
            same = hf_count == rho_count
            ok &= same
            print(f"  {'ok' if same else 'FAIL'}  {path.name}: librho {rho_count:,} / transformers {hf_count:,}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
