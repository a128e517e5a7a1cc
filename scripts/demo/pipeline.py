#!/usr/bin/env python3
"""The Rho-1 pipeline, end to end, from one config (configs/demo/*.yaml), by calling librho's CLIs:

  generate data -> rho_tokenize -> [rho_pretrain base model, CLM on a first part of the corpus]
  -> rho_pretrain (reference, CLM on the high-quality set) -> rho_score (corpus)
  -> per seed: rho_pretrain CLM baseline and rho_pretrain SLM on the same corpus tokens and budget
  -> per variant (config `variants`) and seed: SLM with other selection settings, same tokens and budget
  -> rho_eval (target-domain loss, few-shot accuracy) -> rho_categories (how token losses moved, first seed)
  -> rho_view (token view) -> rho_report (report.html)

A config may start from another (`base: cpu.yaml`, relative to it) and add or replace top-level keys.

With `base_model` in the config the runs are the paper's continual pretraining: a base model is first pretrained
(CLM) on its own corpus (`data.base_corpus`, or the first `base_model.corpus_share` of the generated corpus's
documents, the rest being the corpus the runs continue on); the reference model is the base fine-tuned on the
high-quality set, the CLM and SLM runs continue from the base, and the base is evaluated as "before".

Every stage skips work whose output is already complete, so a rerun after an interruption continues.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import report  # noqa: E402

T0 = time.time()


def stage(msg):
    print(f"\n=== [{time.time() - T0:6.1f}s] {msg}", flush=True)


def run(*args, log=None):
    args = [str(a) for a in args]
    print("  $ " + " ".join(args), flush=True)
    if log:
        with open(log, "w") as f:
            r = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            sys.stdout.write(Path(log).read_text()[-4000:])
    else:
        r = subprocess.run(args)
    if r.returncode != 0:
        raise SystemExit(f"pipeline: stage failed (exit {r.returncode}): {' '.join(args)}")


def resolve(p):
    p = Path(p)
    return p if p.is_absolute() else (ROOT / p)


def load_config(path):
    path = Path(path)
    cfg = yaml.safe_load(path.read_text())
    if "base" in cfg:
        base = load_config(path.parent / cfg.pop("base"))
        base.update(cfg)
        cfg = base
    return cfg


def check_made_with(out, cfg):
    """Stages reuse what `out` holds, so it must hold the work of this config (all but `variants`: a variants
    config adds runs to its base's folder). Stops, naming the keys that differ, instead of mixing two configs."""
    made_with = out / "pipeline_config.json"
    mine = json.loads(json.dumps({k: v for k, v in cfg.items() if k != "variants"}))
    if made_with.exists():
        theirs = json.loads(made_with.read_text())
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise SystemExit(f"pipeline: {out} holds the work of another config ({', '.join(differ)} differ from "
                             f"{made_with}); remove the folder or choose another out_dir")
    elif any(out.iterdir()):
        raise SystemExit(f"pipeline: {out} is not empty and has no {made_with.name} (made by an older pipeline?); "
                         "remove it or choose another out_dir")
    else:
        made_with.write_text(json.dumps(mine, indent=2) + "\n")


def split_generated_corpus(data, share):
    """The generated corpus's documents split in order: the first `share` into base_corpus.jsonl (the base
    model's pretraining), the rest into continual.jsonl (the corpus the runs continue on). Written once, each file
    under a temporary name first; returns the two data specs."""
    if not 0 < share < 1:
        raise SystemExit(f"pipeline: base_model.corpus_share must be in (0, 1), not {share}")
    parts = {"base": data / "base_corpus.jsonl", "continual": data / "continual.jsonl"}
    if not all(p.exists() for p in parts.values()):
        lines = (data / "corpus.jsonl").read_text().splitlines(keepends=True)
        cut = round(len(lines) * share)
        if cut == 0 or cut == len(lines):
            raise SystemExit(f"pipeline: base_model.corpus_share {share} leaves one part of the {len(lines)} "
                             "corpus documents empty")
        for p, part in ((parts["base"], lines[:cut]), (parts["continual"], lines[cut:])):
            tmp = p.with_suffix(".tmp")
            tmp.write_text("".join(part))
            tmp.replace(p)
    return ({"paths": [parts["continual"]], "fields": ["text"]}, {"paths": [parts["base"]], "fields": ["text"]})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/demo/cpu.yaml"))
    ap.add_argument("--bin", default=str(ROOT / "build/apps"), help="folder with the rho_* tools")
    ap.add_argument("--out", help="override out_dir")
    args = ap.parse_args()
    cfg = load_config(args.config)
    b = Path(args.bin)
    out = resolve(args.out or cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    check_made_with(out, cfg)
    device = cfg.get("device", "cpu")
    seq_len = cfg["seq_len"]
    d = cfg["data"]

    # 1. data
    data = out / "data"
    if "generate" in d and not (data / "stats.json").exists():
        stage("generate the demo corpus")
        g = d["generate"]
        run(sys.executable, ROOT / "scripts/demo/make_corpus.py", "--out", data, "--seed", g["seed"],
            "--hq-chars", g["hq_chars"], "--corpus-chars", g["corpus_chars"], "--noise-fraction",
            g["noise_fraction"], "--eval-problems", g["eval_problems"], "--eval-clean-chars", g["eval_clean_chars"],
            "--max-operand", g.get("max_operand", 0))
    hq = d.get("hq", {"paths": [data / "hq.jsonl"], "fields": ["text"]})
    corpus = d.get("corpus", {"paths": [data / "corpus.jsonl"], "fields": ["text"]})
    base_cfg = cfg.get("base_model")
    if base_cfg and "base_corpus" not in d and "corpus" not in d:
        corpus, base_corpus = split_generated_corpus(data, base_cfg.get("corpus_share", 0.5))
    elif base_cfg:
        if "base_corpus" not in d:
            raise SystemExit("pipeline: base_model with your own data.corpus needs data.base_corpus (the base "
                             "model's pretraining corpus)")
        base_corpus = d["base_corpus"]
    eval_clean = d.get("eval_clean", {"paths": [data / "eval_clean.jsonl"], "fields": ["text"]})
    eval_problems = resolve(d.get("eval_problems", data / "eval_problems.jsonl"))
    fewshot_prompt = resolve(d.get("fewshot_prompt", data / "fewshot_prompt.txt"))

    # 2. tokens: the corpus first (it trains the tokenizer when asked), then the others with its tokenizer
    tok = out / "tokens"

    def tokenize(name, spec, tokenizer_args):
        dst = tok / name
        if (dst / "manifest.json").exists():
            return dst
        stage(f"tokenise {name}")
        fields = sum((["--field", f] for f in spec.get("fields", ["text"])), [])
        run(b / "rho_tokenize", *[resolve(p) for p in spec["paths"]], "--out", dst, *fields, *tokenizer_args,
            "--shard-tokens", cfg.get("shard_tokens", 1_000_000))
        return dst

    t = cfg["tokenizer"]
    first = ["--tokenizer", resolve(t["model"])] if "model" in t else \
        ["--train-tokenizer", "--vocab-size", t["train_vocab_size"]]
    tok_corpus = tokenize("corpus", corpus, first)
    spm = ["--tokenizer", tok_corpus / json.loads((tok_corpus / "manifest.json").read_text())["tokenizer_name"]]
    tok_hq = tokenize("hq", hq, spm)
    tok_eval = tokenize("eval_clean", eval_clean, spm)
    tok_base = tokenize("base_corpus", base_corpus, spm) if base_cfg else None
    vocab = json.loads((tok_corpus / "manifest.json").read_text())["vocab_size"]

    model_cfg = yaml.safe_load(resolve(cfg["model"]).read_text())["model"]
    model_cfg["vocab_size"] = max(model_cfg["vocab_size"], vocab)
    model_cfg["max_position_embeddings"] = max(model_cfg.get("max_position_embeddings", seq_len), seq_len)

    def train(name, data_dir, spec, seed, extra=None, init=None):
        """rho_pretrain into runs/<name>: a fresh model of the config's shape, or continued from `init` (a run)."""
        run_dir = out / "runs" / name
        if (run_dir / "hf" / "config.json").exists():
            return run_dir
        stage(f"train {name}")
        conf = {
            "run": {"out_dir": str(run_dir), "seed": seed, "device": device},
            "model": {"init_from": str(init / "hf")} if init else model_cfg,
            "data": {"train": str(data_dir), "seq_len": seq_len, "batch_size": spec["batch_size"],
                     "eval": {"target": str(tok_eval)}, "eval_every": spec.get("eval_every", spec["steps"]),
                     "eval_batches": spec.get("eval_batches", 16)},
            "optim": {"lr": spec["lr"], "min_lr": spec["lr"] / 10, "warmup_steps": max(1, spec["steps"] // 20),
                      "max_steps": spec["steps"]},
            "train": {"log_every": max(1, spec["steps"] // 10), "checkpoint_every": max(1, spec["steps"] // 2)},
        }
        if extra:
            for k, v in extra.items():
                conf.setdefault(k, {}).update(v)
        path = out / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(conf, sort_keys=False))
        resume = ["--resume"] if (run_dir / "checkpoints").exists() else []
        run(b / "rho_pretrain", path, *resume)
        return run_dir

    # 3. the base model (continual pretraining only), then the reference model(s) on the high-quality set (a
    # second one, from another seed, when a variant combines two); 4. their losses on the corpus
    base = train("base", tok_base, base_cfg, 0) if base_cfg else None
    variants = cfg.get("variants") or {}
    n_refs = max([1] + [v.get("references", 1) for v in variants.values()])
    ref_losses = []
    for i in range(n_refs):
        name = "reference" if i == 0 else f"reference{i + 1}"
        ref_dir = train(name, tok_hq, cfg["reference"], i, init=base)
        if i == 0:
            ref = ref_dir
        losses = out / "losses" / name
        if not (losses / "manifest.json").exists():
            stage(f"score the corpus with {name}")
            run(b / "rho_score", "--model", ref_dir / "hf", "--data", tok_corpus, "--out", losses, "--seq-len",
                seq_len, "--device", device)
        ref_losses.append(str(losses))
    losses = Path(ref_losses[0])

    # 5. CLM baseline and SLM (and each variant), same tokens, same budget, per seed. The first seed's CLM and
    # SLM runs keep 10 checkpoints for the token-category analysis.
    slm = cfg.get("slm", {})
    paper = {"ratio": slm.get("ratio", 0.6), "rule": slm.get("rule", "excess"), "scope": slm.get("scope", "step")}
    steps = cfg["pretrain"]["steps"]
    history = {"train": {"checkpoint_every": max(1, steps // 10), "keep_checkpoints": 11}}
    runs = {"clm": [], "slm": []}
    # Every run's evaluations show the reference's loss on the target set beside its own (slm.eval_reference).
    beside = {"eval_reference": str(ref / "hf")}
    for seed in cfg["seeds"]:
        first = history if seed == cfg["seeds"][0] else {}
        runs["clm"].append(train(f"clm-seed{seed}", tok_corpus, cfg["pretrain"], seed, {**first, "slm": beside},
                                 init=base))
        runs["slm"].append(train(f"slm-seed{seed}", tok_corpus, cfg["pretrain"], seed, {
            "train": {"stage": "slm", **first.get("train", {})},
            "slm": {**paper, "reference_losses": str(losses), **beside}}, init=base))
    for name, v in variants.items():
        settings = {**paper, **beside, **v.get("slm", {})}
        if "self_reference" not in settings:
            settings["reference_losses"] = ref_losses[:v.get("references", 1)]
        runs[name] = [train(f"{name}-seed{seed}", tok_corpus, cfg["pretrain"], seed,
                            {"train": {"stage": "slm"}, "slm": settings}, init=base) for seed in cfg["seeds"]]

    # 6. evaluation of every final model (and the reference)
    e = cfg.get("eval", {})
    evals = {}
    for run_dir in ([base] if base else []) + [ref] + [r for rs in runs.values() for r in rs]:
        js = out / "eval" / f"{run_dir.name}.json"
        if not js.exists():
            stage(f"evaluate {run_dir.name}")
            js.parent.mkdir(parents=True, exist_ok=True)
            extra = sum((["--stop", s] for s in e.get("stop", ["Question:"])), [])
            # Zero-shot unless asked: a few-shot prompt longer than the training windows is out of distribution.
            if e.get("fewshot", False):
                extra += ["--fewshot-prompt", fewshot_prompt]
            run(b / "rho_eval", "--model", run_dir / "hf", "--data", f"target={tok_eval}", "--tokenizer", spm[1],
                "--seq-len", seq_len, "--fewshot", eval_problems, "--separator", e.get("separator", " "), *extra, "--max-new-tokens", e.get("max_new_tokens", 64),
                "--limit", e.get("fewshot_limit", 100), "--device", device, "--quiet", "--json", js,
                log=out / "eval" / f"{run_dir.name}.log")
        evals[run_dir.name] = json.loads(js.read_text())

    # 7. token categories (how each token's loss moved over the checkpoints) of the first seed's CLM and SLM,
    # both against the CLM run's threshold (its median fitted start loss) so their shares compare
    categories = {}
    c = cfg.get("categories", {})
    for kind in ("clm", "slm"):
        js = out / "categories" / f"{runs[kind][0].name}.json"
        if not js.exists():
            stage(f"token categories of {runs[kind][0].name}")
            js.parent.mkdir(parents=True, exist_ok=True)
            same = ["--threshold", categories["clm"]["threshold"]] if kind == "slm" else []
            run(b / "rho_categories", "--run", runs[kind][0], "--data", tok_corpus, "--seq-len", seq_len,
                "--windows", c.get("windows", 64), "--device", device, "--quiet", "--json", js, *same)
        categories[kind] = json.loads(js.read_text())

    # 8. the token view: reference losses, and the CLM baseline's as the "current" model for excess loss
    current = out / "losses" / "clm-seed{}".format(cfg["seeds"][0])
    if not (current / "manifest.json").exists():
        stage("score the corpus with the CLM baseline (for the excess-loss view)")
        run(b / "rho_score", "--model", runs["clm"][0] / "hf", "--data", tok_corpus, "--out", current, "--seq-len",
            seq_len, "--device", device)
    v = cfg.get("view", {})
    view = out / "report" / "token_view.html"
    view.parent.mkdir(parents=True, exist_ok=True)
    stage("render the token view")
    run(b / "rho_view", "--data", tok_corpus, "--losses", losses, "--current-losses", current,
        "--start", v.get("start", 0), "--length", v.get("length", 700), "--ratio", slm.get("ratio", 0.6),
        "--title", "Demo corpus: what SLM keeps", "--out", view)

    # 9. the report
    stage("write the report")
    path = report.write(out, cfg, runs, evals, view, categories, tools=b)
    print(f"\nreport: {path}\n{report.summary_text(out)}")
    print(f"total {time.time() - T0:.0f}s")


if __name__ == "__main__":
    main()
