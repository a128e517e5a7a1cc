#!/usr/bin/env python3
"""End to end through the CLIs: rho_tokenize -> rho_model init -> rho_score -> rho_view, then
(1) rho_score killed (SIGKILL) after 2 shards and rerun writes outputs byte-identical to an uninterrupted run,
(2) rho_score's per-token losses equal Hugging Face transformers' on the same random tiny model (1e-4),
(3) the view page renders in headless Chromium (DOM and screenshot checked).
Exit 77 (skipped) without transformers; the Chromium part is skipped, with a message, without chromium."""
import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from cli_helpers import write_model_yaml, write_word_corpus


def run(*args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(map(str, args))}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="folder with the rho_* tools")
    args = ap.parse_args()
    b = Path(args.bin)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_word_corpus(t / "c.jsonl", 300)
        run(b / "rho_tokenize", t / "c.jsonl", "--out", t / "tok", "--train-tokenizer", "--vocab-size", "320",
            "--shard-tokens", "2000", "--quiet")
        vocab = json.loads((t / "tok/manifest.json").read_text())["vocab_size"]
        write_model_yaml(t / "m.yaml", vocab)
        run(b / "rho_model", "init", t / "m.yaml", "--seed", "3", "--out", t / "hf")
        run(b / "rho_score", "--model", t / "hf", "--data", t / "tok", "--out", t / "loss", "--seq-len", "32",
            "--batch-size", "4", "--device", "cpu")

        # (1) kill -9 part-way, rerun, compare every output byte for byte
        score = [b / "rho_score", "--model", t / "hf", "--data", t / "tok", "--out", t / "loss2", "--seq-len", "32",
                 "--batch-size", "4", "--device", "cpu"]
        killed = subprocess.run([str(a) for a in score + ["--test-kill-after-shards", "2"]], capture_output=True)
        assert killed.returncode == -9, killed
        assert not (t / "loss2/manifest.json").exists()
        run(*score)
        ok = True
        for f in sorted((t / "loss").iterdir()):
            same = f.read_bytes() == (t / "loss2" / f.name).read_bytes()
            ok &= same
            if not same:
                print(f"killed-and-rerun output differs: {f.name}")
        print(f"killed after 2 shards and rerun: {len(list((t / 'loss').iterdir()))} files byte-identical: {ok}")
        try:
            import torch
            import torch.nn.functional as F
            import transformers
        except ImportError as e:
            print(f"SKIPPED transformers comparison: {e}")
            return 77
        man = json.loads((t / "tok/manifest.json").read_text())
        tokens = []
        for s in man["shards"]:
            data = (t / "tok" / s["file"]).read_bytes()
            tokens += struct.unpack(f"<{len(data) // 2}H", data)
        lman = json.loads((t / "loss/manifest.json").read_text())
        losses = []
        for s in lman["shards"]:
            data = (t / "loss" / s["file"]).read_bytes()
            losses += struct.unpack(f"<{len(data) // 4}f", data)
        assert len(losses) == len(tokens)
        model = transformers.LlamaForCausalLM.from_pretrained(t / "hf", dtype=torch.float32).eval()
        T = 32
        worst = 0.0
        with torch.no_grad():
            for start in range(0, len(tokens) - 1, T):
                w = torch.tensor(tokens[start:start + T + 1]).unsqueeze(0)
                ce = F.cross_entropy(model(w[:, :-1]).logits[0], w[0, 1:], reduction="none")
                for j, v in enumerate(ce.tolist()):
                    worst = max(worst, abs(v - losses[start + 1 + j]))
        print(f"rho_score vs transformers per-token loss over {len(tokens) - 1} tokens: max |diff| = {worst:.2e}")
        ok &= worst <= 1e-4

        run(b / "rho_view", "--data", t / "tok", "--losses", t / "loss", "--start", "0", "--length", "300",
            "--ratio", "0.6", "--out", t / "view.html")
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            print("SKIPPED rendering check: chromium is not installed")
        else:
            flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
            dom = run(chromium, *flags, "--dump-dom", f"file://{t / 'view.html'}")
            spans = dom.count("<span class=\"keep\"") + dom.count("<span class=\"drop\"")
            kept = dom.count("<span class=\"keep\"")
            print(f"chromium DOM: {spans} token spans, {kept} kept")
            ok &= spans >= 300 and 0.55 * spans <= kept <= 0.65 * spans + 1
            run(chromium, *flags, "--window-size=1000,700", f"--screenshot={t / 'view.png'}", f"file://{t / 'view.html'}")
            size = (t / "view.png").stat().st_size
            print(f"chromium screenshot: {size} bytes")
            ok &= size > 10000
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
