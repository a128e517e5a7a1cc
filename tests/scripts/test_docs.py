#!/usr/bin/env python3
"""Docs as tests: the commands and examples in README.md and docs/*.md run as written, and every tool's --help
agrees with its option table.

  test_docs.py examples --bin BUILD/apps [--work DIR] [--page docs/x.md ...]
  test_docs.py options  --bin BUILD/apps

examples: the pages are read in PAGES order (a page's commands may use what an earlier page made, as a reader
following the docs would have it) and run in one working folder, emptied first, which stands for the repository
root: configs/ and scripts/ there are links to this source tree, the tools are on PATH (the docs write them bare:
docs/building.md), and `python3` and `torchrun` are the venv's. Each shell block (```sh) runs in bash -e, after the
SUBSTITUTIONS below rewrite it (shown in the output with their reasons). A block is skipped, with its reason
printed, when
  - the line before its fence is `<!-- docs-test: skip: REASON -->`;
  - it names ../shared/data and that folder (or $RHO_SHARED_DATA) is absent (a user's clone does not have it);
  - it runs torchrun and the Python running this test has none beside it;
  - it runs tool-integrated evaluation and the kernel has no Landlock (the sandbox's requirement).
A YAML block whose first line is `# PATH — ...` is the shipped file PATH: its lines must equal the file's, comments
aside. Any other YAML block must be marked skip. A block of any language marked `<!-- docs-test: excerpt PATH -->`
must appear in PATH, line for line (indentation aside). Blocks in other languages (output samples, JSON, C++, CMake)
are illustrations and are not run.

options: the table after `<!-- docs-test: keys rho_pretrain -->` must be `rho_pretrain --keys` exactly (the config
keys as the code's table has them). Each `<!-- docs-test: options TOOL [SUBCOMMAND] -->` marker is followed by a table whose first column names
options (`--out DIR`, several per cell allowed). The options named must be exactly those of `TOOL [SUB] --help`
(hidden ones aside), every option must have a description in --help, and when --help shows a default (`=VALUE`)
the table's row must state it. Every tool (and rho_model subcommand) must have a table.

Exit status: 0 when every block ran (or was skipped for a stated reason) and every table matched; 1 otherwise,
naming page and line.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Reading order: what a later page uses, an earlier page makes (tok/ in training.md, runs/ref before scoring.md).
PAGES = ["README.md", "docs/architecture.md", "docs/building.md", "docs/model.md", "docs/data.md", "docs/training.md", "docs/scoring.md",
         "docs/eval.md", "docs/distributed.md", "docs/scaling.md", "docs/trust.md", "docs/demo.md", "docs/performance.md"]
TOOLS = [["rho_tokenize"], ["rho_score"], ["rho_pretrain"], ["rho_eval"], ["rho_view"], ["rho_categories"], ["rho_report"],
         ["rho_model", "info"], ["rho_model", "init"], ["rho_model", "convert"], ["rho_model", "logits"],
         ["rho_model", "plan"]]

# (pattern, replacement, why): applied to every shell block before it runs, in this order.
SUBSTITUTIONS = [
    (r"/path/to/TinyLlama-1\.1B", "fixtures/tinyllama-shaped",
     "published checkpoints are not downloaded: a random Llama with TinyLlama's vocabulary (32000) stands in"),
    (r"--nproc-per-node 8", "--nproc-per-node 2", "2 processes on the CPU stand for 8 GPUs"),
    (r"(rho_tokenize [^\n]*--train-tokenizer --vocab-size) 32000", r"\1 600",
     "the stand-in web text is too small for a 32k vocabulary"),
    (r"\brho_eval ", "rho_eval --limit 2 ", "two items of each few-shot or multiple-choice task (generation on the CPU)"),
    (r"--bench (\S+)", r"--bench \1 --max-new-tokens 16",
     "the stand-in model's suite generations are cut to 16 tokens (1024 per call on the CPU would take hours)"),
]

# What the docs assume a reader has besides this repository, made before the first page runs.
FIXTURES_WHY = {
    "web/*.jsonl.zst, notes/": "data.md's 'folder of compressed web text': the demo generator's corpus, zstd-compressed",
    "fixtures/tinyllama-shaped": "eval.md and model.md's /path/to/TinyLlama-1.1B",
}


def landlock():
    """Whether the kernel offers Landlock (the tool-integrated sandbox needs it: docs/eval.md)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)) >= 1  # landlock_create_ruleset(VERSION)


def shared_data():
    p = Path(os.environ.get("RHO_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()
    return p if (p / "gsm8k").is_dir() else None


class Block:
    def __init__(self, page, line, lang, text, marker):
        self.page, self.line, self.lang, self.text, self.marker = page, line, lang, text, marker

    @property
    def where(self):
        return f"{self.page}:{self.line}"


MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")


def marker_before(lines, i):
    """The docs-test marker on the nearest non-blank line above line i, or None."""
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    m = MARKER.match(lines[j]) if j >= 0 else None
    return m.group(1) if m else None


def read_blocks(page):
    lines = (ROOT / page).read_text().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise SystemExit(f"{page}:{start + 1}: code fence never closed")
            blocks.append(Block(page, start + 1, lang, "\n".join(body) + "\n", marker_before(lines, start)))
        i += 1
    return blocks


def substitute(text):
    applied = []
    for pattern, repl, why in SUBSTITUTIONS:
        new = re.sub(pattern, repl, text)
        if new != text:
            applied.append(why)
            text = new
    return text, applied


def make_fixtures(work, env):
    """The inputs the docs take for granted (FIXTURES_WHY), made with the tools themselves."""
    gen = work / "fixtures" / "demo-text"
    subprocess.run([sys.executable, ROOT / "scripts/demo/make_corpus.py", "--out", gen, "--seed", "7",
                    "--hq-chars", "20000", "--corpus-chars", "200000", "--eval-problems", "5"], check=True,
                   capture_output=True)
    (work / "web").mkdir()
    lines = (gen / "corpus.jsonl").read_text().splitlines(keepends=True)
    half = len(lines) // 2
    for name, part in (("part-0.jsonl.zst", lines[:half]), ("part-1.jsonl.zst", lines[half:])):
        subprocess.run(["zstd", "-q", "-o", work / "web" / name], input="".join(part).encode(), check=True)
    (work / "notes").mkdir()
    (work / "notes" / "hq.txt").write_text((gen / "hq.jsonl").read_text())
    cfg = work / "fixtures" / "tinyllama-shaped.yaml"
    cfg.write_text("model: {vocab_size: 32000, hidden_size: 64, intermediate_size: 176, num_layers: 2, "
                   "num_heads: 4, num_kv_heads: 2, max_position_embeddings: 2048}\n")
    subprocess.run(["rho_model", "init", cfg, "--out", work / "fixtures" / "tinyllama-shaped"], check=True,
                   capture_output=True, env=env)


def check_yaml_block(b):
    """A YAML example headed `# PATH — ...` must be that shipped file (comment lines aside)."""
    first = b.text.split("\n", 1)[0]
    m = re.match(r"#\s*(\S+\.ya?ml)\b", first)
    if not m:
        return "a YAML example must start with `# PATH` of the shipped file it shows, or be marked skip"
    path = ROOT / m.group(1)
    if not path.is_file():
        return f"shows {m.group(1)}, which does not exist"

    def body(t):
        return [ln.rstrip() for ln in t.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]

    if body(b.text) != body(path.read_text()):
        return f"differs from {m.group(1)}:\n  docs: {body(b.text)}\n  file: {body(path.read_text())}"
    return None


def check_excerpt(b, path):
    """A block marked `excerpt PATH` must appear in that file: its lines, in order and adjacent (indentation and
    blank lines aside), so a code excerpt in the docs cannot drift from the built and tested file."""
    src = ROOT / path
    if not src.is_file():
        return f"the excerpt's file {path} does not exist"
    want = [ln.strip() for ln in b.text.splitlines() if ln.strip()]
    have = [ln.strip() for ln in src.read_text().splitlines() if ln.strip()]
    for i in range(len(have) - len(want) + 1):
        if have[i:i + len(want)] == want:
            return None
    return f"these lines are not in {path} as shown:\n" + "\n".join(want)


def run_examples(args):
    bin_dir = Path(args.bin).resolve()
    work = Path(args.work).resolve() if args.work else bin_dir.parent / "docs-test"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("configs", "scripts"):
        (work / name).symlink_to(ROOT / name)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    shared = shared_data()
    make_fixtures(work, env)
    if shared:
        (work.parent / "shared").mkdir(exist_ok=True)
        link = work.parent / "shared" / "data"
        if not link.exists():
            link.symlink_to(shared)
    pages = args.page or PAGES
    missing = sorted(set(str(p.relative_to(ROOT)) for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
                     - set(PAGES))
    failures, ran, skipped = [], 0, 0
    if missing:
        failures.append(f"pages not in test_docs.py's PAGES (add them, in reading order): {missing}")
    for page in pages:
        for b in read_blocks(page):
            if b.lang == "yaml":
                if b.marker and b.marker.startswith("skip:"):
                    print(f"{b.where}: yaml skipped: {b.marker[5:].strip()}")
                    skipped += 1
                    continue
                err = check_yaml_block(b)
                print(f"{b.where}: yaml {'FAILED: ' + err if err else 'matches its file'}")
                if err:
                    failures.append(f"{b.where}: {err}")
                continue
            if b.marker and b.marker.startswith("excerpt "):
                err = check_excerpt(b, b.marker.split()[1])
                print(f"{b.where}: {b.lang} excerpt {'FAILED: ' + err if err else 'found in ' + b.marker.split()[1]}")
                if err:
                    failures.append(f"{b.where}: {err}")
                continue
            if b.lang not in ("sh", "bash", "shell"):
                continue
            if b.marker and b.marker.startswith("skip:"):
                print(f"{b.where}: skipped: {b.marker[5:].strip()}")
                skipped += 1
                continue
            if b.marker:
                failures.append(f"{b.where}: unknown docs-test marker '{b.marker}'")
                continue
            if re.search(r"\btorchrun\b", b.text) and not shutil.which("torchrun", path=env["PATH"]):
                print(f"{b.where}: skipped: torchrun (the torch wheel's launcher) is not beside {sys.executable}")
                skipped += 1
                continue
            if "tool-integrated" in b.text and not landlock():
                print(f"{b.where}: skipped: the code sandbox needs Landlock, which this kernel does not offer")
                skipped += 1
                continue
            if "../shared/data" in b.text and not shared:
                print(f"{b.where}: skipped: needs ../shared/data (absent; set RHO_SHARED_DATA)")
                skipped += 1
                continue
            text, applied = substitute(b.text)
            print(f"{b.where}: running" + "".join(f"\n    substituted: {w}" for w in applied))
            t0 = time.time()
            r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=work, env=env,
                               capture_output=True, text=True, timeout=900)
            ran += 1
            if r.returncode != 0:
                tail = "\n".join((r.stdout + r.stderr).splitlines()[-25:])
                failures.append(f"{b.where}: exit {r.returncode}\n--- block as run:\n{text}--- output (tail):\n{tail}")
                print(f"    FAILED (exit {r.returncode}, {time.time() - t0:.1f} s)")
            else:
                print(f"    ok ({time.time() - t0:.1f} s)")
    print(f"\n{ran} shell blocks ran, {skipped} skipped with a reason, {len(failures)} failure(s)")
    for f in failures:
        print("\nFAILED " + f)
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------------- options
# "  --name SPEC  description": SPEC is the type, "=default", "...", REQUIRED, Excludes (single spaces inside).
HELP_OPTION = re.compile(r"^\s{2}(--[a-z0-9-]+)((?:\S| (?=\S))*)(?:\s{2,}(.*))?$")
HELP_DEFAULT = re.compile(r"^ (?:TEXT|INT|UINT|FLOAT|BOOLEAN)(?::\{[^}]*\})?=(.*?)(?: \.\.\.| REQUIRED| Excludes:.*)?$")


def parse_help(text):
    """{option: (default or None, description)} from CLI11's --help (continuation lines joined)."""
    opts, last = {}, None
    in_options = False
    for line in text.splitlines():
        if line.startswith("Options:"):
            in_options = True
            continue
        if not in_options:
            continue
        if line and not line.startswith(" "):
            break
        if line.startswith("  -h,--help"):
            continue
        m = HELP_OPTION.match(line)
        if m:
            last = m.group(1)
            d = HELP_DEFAULT.match(m.group(2))
            opts[last] = (d.group(1) if d else None, (m.group(3) or "").strip())
        elif last and line.strip() and line.startswith("      "):
            d, desc = opts[last]
            opts[last] = (d, (desc + " " + line.strip()).strip())
    return opts


def marked_tables(kind):
    """(where, marker arguments, table lines) for every `<!-- docs-test: KIND ARGS -->` marker in the docs: the
    Markdown table that follows it."""
    for page in PAGES:
        lines = (ROOT / page).read_text().split("\n")
        for i, line in enumerate(lines):
            m = MARKER.match(line)
            if not m or m.group(1).split()[0] != kind:
                continue
            j = i + 1
            while j < len(lines) and not lines[j].startswith("|"):
                j += 1
            table = []
            while j < len(lines) and lines[j].startswith("|"):
                table.append(lines[j])
                j += 1
            yield f"{page}:{i + 1}", m.group(1).split()[1:], table


def doc_tables():
    """{(tool, sub...): (where, {option: row text})} from every options marker in the docs."""
    tables = {}
    for where, args, table in marked_tables("options"):
        rows = {}
        for line in table:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells and not set(cells[0]) <= set("-: "):
                for opt in re.findall(r"`(--[a-z0-9-]+)", cells[0]):
                    rows[opt] = line
        tables[tuple(args)] = (where, rows)
    return tables


def default_stated(default, row):
    """Whether a table row states --help's default (thousands separators and backticks ignored)."""
    norm = row.replace("`", "").replace(",", "")
    d = default.replace(",", "")
    return re.search(r"(?<![\w.])" + re.escape(d) + r"(?![\w.])", norm) is not None


def check_key_tables(bin_dir):
    """Each `<!-- docs-test: keys TOOL -->` table must be exactly `TOOL --keys` (the config key table the code
    reads, checks and writes with)."""
    failures, found = [], 0
    for where, args, table in marked_tables("keys"):
        found += 1
        tool = args[0]
        want = subprocess.run([bin_dir / tool, "--keys"], capture_output=True, text=True, check=True).stdout
        if table != want.rstrip("\n").split("\n"):
            diff = [f"  docs: {a}\n  code: {b}" for a, b in zip(table, want.split("\n")) if a != b][:3]
            failures.append(f"{where}: the key table differs from `{tool} --keys` (paste its output):\n"
                            + "\n".join(diff or [f"  {len(table)} rows in the docs"]))
        else:
            print(f"{where}: key table equals `{tool} --keys` ({len(table) - 2} keys)")
    if not found:
        failures.append("no `<!-- docs-test: keys rho_pretrain -->` table in the docs")
    return failures


def run_options(args):
    bin_dir = Path(args.bin).resolve()
    tables = doc_tables()
    failures = []
    for tool in TOOLS:
        name = " ".join(tool)
        r = subprocess.run([bin_dir / tool[0], *tool[1:], "--help"], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"{name} --help: exit {r.returncode}")
            continue
        helped = parse_help(r.stdout)
        if tuple(tool) not in tables:
            failures.append(f"{name}: no `<!-- docs-test: options {name} -->` table in the docs")
            continue
        where, rows = tables[tuple(tool)]
        for opt in sorted(set(helped) - set(rows)):
            failures.append(f"{where}: {name} {opt} is in --help but not in the table")
        for opt in sorted(set(rows) - set(helped)):
            failures.append(f"{where}: {name} {opt} is in the table but not in --help")
        for opt, (default, desc) in helped.items():
            if not desc:
                failures.append(f"{name} {opt}: no description in --help")
            if default is not None and opt in rows and not default_stated(default, rows[opt]):
                failures.append(f"{where}: {name} {opt}: --help's default {default!r} is not in the row: {rows[opt]}")
        print(f"{name}: {len(helped)} options, table at {where}")
    failures += check_key_tables(bin_dir)
    for f in failures:
        print("FAILED " + f)
    print(f"{len(TOOLS)} tools, {len(failures)} failure(s)")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["examples", "options"])
    ap.add_argument("--bin", required=True, help="folder of the built rho_* tools")
    ap.add_argument("--work", help="working folder (emptied; default: BIN/../docs-test)")
    ap.add_argument("--page", action="append", help="run only this page (repeatable)")
    args = ap.parse_args()
    return run_examples(args) if args.mode == "examples" else run_options(args)


if __name__ == "__main__":
    sys.exit(main())
