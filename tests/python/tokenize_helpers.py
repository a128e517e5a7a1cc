"""Shared by the rho_tokenize tests: running the tool, writing compressed files, generating a corpus."""
import ctypes
import ctypes.util
import glob
import gzip
import hashlib
import json
import random
import subprocess
import sysconfig
from pathlib import Path


def run(tool, *args, expect=0):
    """Runs rho_tokenize; returns (returncode, stdout, stderr) after checking the return code when expect is set."""
    r = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True)
    if expect is not None and r.returncode != expect:
        raise SystemExit(f"expected exit {expect}, got {r.returncode}: {tool} {' '.join(map(str, args))}\n"
                         f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r.returncode, r.stdout, r.stderr


_zstd = None


def zstd_compress(data: bytes, level=3) -> bytes:
    """One zstd frame, through the libzstd the build links (no Python package or CLI needed)."""
    global _zstd
    if _zstd is None:
        _zstd = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
        _zstd.ZSTD_compressBound.restype = ctypes.c_size_t
        _zstd.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
        _zstd.ZSTD_compress.restype = ctypes.c_size_t
        _zstd.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                        ctypes.c_int]
        _zstd.ZSTD_isError.argtypes = [ctypes.c_size_t]
    cap = _zstd.ZSTD_compressBound(len(data))
    out = ctypes.create_string_buffer(cap)
    n = _zstd.ZSTD_compress(out, cap, data, len(data), level)
    if _zstd.ZSTD_isError(n):
        raise RuntimeError("ZSTD_compress failed")
    return out.raw[:n]


def write(path: Path, data: bytes):
    """Writes data, compressed by the name's suffix (.gz; .zst as two frames, which readers must join)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        half = len(data) // 2
        data = zstd_compress(data[:half]) + zstd_compress(data[half:])
    path.write_bytes(data)


WORDS = None


def random_text(rng: random.Random, n_words: int) -> str:
    global WORDS
    if WORDS is None:
        syl = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "de", "ün", "ça", "ž", "λο", "дa", "日", "本"]
        w = random.Random(1234)  # the same vocabulary whatever the caller's generator
        WORDS = ["".join(w.choice(syl) for _ in range(w.randint(1, 4))) for _ in range(3000)]
    out = []
    for i in range(n_words):
        out.append(rng.choice(WORDS))
        if rng.random() < 0.08:
            out.append(rng.choice([".", ",", "!", "?", "42", "3.14"]))
        if rng.random() < 0.03:
            out.append("\n")
    return " ".join(out)


def make_corpus(root: Path, megabytes=3.0, seed=0):
    """A corpus in every input form: JSON Lines plain, .gz and .zst, and a folder of text files.
    Some documents are long enough to straddle several shards."""
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    parts = {"part0.jsonl": 0.35, "part1.jsonl.gz": 0.3, "part2.jsonl.zst": 0.3}
    for name, share in parts.items():
        lines, size = [], 0
        while size < share * target:
            n = rng.choice([5, 20, 80, 300]) if rng.random() > 0.01 else 30000
            line = json.dumps({"text": random_text(rng, n), "id": len(lines)}, ensure_ascii=rng.random() < 0.5)
            lines.append(line)
            size += len(line) + 1
        write(root / name, ("\n".join(lines) + "\n").encode())
    for i in range(12):
        write(root / "notes" / f"note{i:02d}.txt", random_text(rng, rng.randint(50, 3000)).encode())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_files(d: Path):
    """What must be byte-identical between runs: the shards, the manifest and the tokenizer copy."""
    return {p.name: sha(p) for p in sorted(d.iterdir()) if not p.name.startswith(".")}


# Text a tokenizer can get wrong: scripts without spaces, combining marks, emoji sequences, odd whitespace, digits,
# special-token look-alikes, code. Used by the parity tests of both tokenizer kinds.
MULTILINGUAL = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Grüße aus Köln! Ça coûte 12,50 € — naïve façade, déjà vu. ¿Qué tal? ¡Olé!",
    "Москва — столица России. Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Καλημέρα κόσμε· αὐτὸς ὁ λόγος. שלום עולם! مرحبا بالعالم ١٢٣٤٥",
    "日本語のテキスト、漢字とひらがなとカタカナ。中文文本：你好，世界！한국어 텍스트: 안녕하세요 세계",
    "हिन्दी में पाठ। தமிழ் உரை. ภาษาไทยไม่มีช่องว่าง ທົດລອງ",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇩🇪🇯🇵 ❤️ ✔︎ and text 🙂.",
    "Decomposed: e\u0301 a\u0308 o\u0302 (NFD) vs é ä ô (NFC); Å \u212b; ﬁ ligature; ① ② ③; Ⅻ; ½ ¾.",
    "Digits: 1234567890 3.14159 1e-10 0x1F 1,000,000 ٣٤٥ ४५६ ௧௨௩ 12345678901234567890",
    "Whitespace:\ttab\t\tdouble tab\nnewline\r\ncrlf\n\n\nthree newlines   three spaces \u00a0nbsp\u2003em-space \u3000ideo",
    "Contractions: I'm, you're, he's, we've, they'll, I'd, it's, DON'T, Can'T, o'clock, rock'n'roll.",
    "Special tokens inside text: <|im_start|>user\nHi<|im_end|>\n<|endoftext|> and <|im_start|><|im_end|>",
    "Code-ish: x+=1; y = a[i] if i<n else -1  # comment\n    return {'k': [1, 2, 3]}  // done;;",
    "   leading spaces, trailing spaces   ",
    "",
]


def python_sources(root: Path):
    """The repository's Python files and 150 of the standard library's, as texts."""
    paths = sorted(glob.glob(str(root / "**" / "*.py"), recursive=True))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paths += sorted(str(p) for p in stdlib.glob("*.py"))[:150]
    texts = []
    for p in paths:
        try:
            texts.append(Path(p).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            pass
    return texts
