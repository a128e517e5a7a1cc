#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): small valid inputs of each format and a
few near misses. Deterministic; rerun to regenerate (the committed files are its output)."""
import hashlib
import json
import struct
from pathlib import Path

root = Path(__file__).parent / "corpus"


def put(target, name, data):
    d = root / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None, pad=True):
    """tensors: name -> (dtype, shape, element size)."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, elem) in tensors.items():
        n = elem
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + bytes(range(256)) * (off // 256) + bytes(off % 256)


put("fuzz_safetensors_header", "two_tensors", safetensors({"a": ("F32", [2, 3], 4), "b": ("BF16", [4], 2)},
                                                          {"format": "pt"}))
put("fuzz_safetensors_header", "all_dtypes", safetensors({
    f"t{i}": (dt, [2], sz) for i, (dt, sz) in enumerate(
        [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4), ("I16", 2), ("I8", 1), ("U8", 1),
         ("BOOL", 1), ("U16", 2), ("U32", 4)])}))
put("fuzz_safetensors_header", "scalar_and_empty", safetensors({"s": ("F32", [], 4), "e": ("F32", [0, 5], 4)}))
put("fuzz_safetensors_header", "unaligned", safetensors({"x": ("I8", [3], 1), "y": ("F32", [1], 4)}, pad=False))
put("fuzz_safetensors_header", "truncated", safetensors({"a": ("F32", [8], 4)})[:-5])
put("fuzz_safetensors_header", "overlap", struct.pack("<Q", 96) + json.dumps(
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).ljust(96).encode() + bytes(16))

sha = hashlib.sha256(b"x").hexdigest()
manifest = {"format_version": 1, "dtype": "uint16", "vocab_size": 320, "tokenizer_name": "tokenizer.model",
            "tokenizer_sha256": sha, "bos_id": 1, "eos_id": 2, "num_tokens": 5000, "num_documents": 40,
            "skipped_documents": 0, "skipped_files": 0,
            "shards": [{"file": "shard_00000.bin", "num_tokens": 2000, "num_documents": 15, "sha256": sha},
                       {"file": "shard_00001.bin", "num_tokens": 3000, "num_documents": 25, "sha256": sha}]}
put("fuzz_manifest", "valid", json.dumps(manifest, indent=2) + "\n")
put("fuzz_manifest", "uint32", json.dumps(dict(manifest, dtype="uint32", vocab_size=100000, bos_id=-1)))
put("fuzz_manifest", "bad_total", json.dumps(dict(manifest, num_tokens=4999)))
put("fuzz_manifest", "escaping_path", json.dumps(dict(manifest, shards=[dict(manifest["shards"][0],
                                                                             file="../x.bin")], num_tokens=2000,
                                                      num_documents=15)))
put("fuzz_manifest", "unknown_key", json.dumps(dict(manifest, extra=1)))
put("fuzz_manifest", "loss_manifest", json.dumps({"format_version": 1, "dtype": "float32", "shards": []}))

# fuzz_sp_encoder: a byte choosing the model (0 BPE, 1 BPE nmt_nfkc, 2 unigram nmt_nfkc, 3 unigram identity),
# then text.
for m in range(4):
    put("fuzz_sp_encoder", f"model{m}_words", bytes([m]) + "  the answer is 42, café 日本語 😀 ﬁ Ａ\tx  ".encode())
    put("fuzz_sp_encoder", f"model{m}_bytes", bytes([m]) + b"a\xff\x00b \xe2\x96 \xed\xa0\x80 aaaa==== \xe2\x96\x81\xe2\x96\x81x")
put("fuzz_jsonl", "plain", "".join(json.dumps({"text": f"document {i} with some words", "id": i}) + "\n"
                                   for i in range(5)))
put("fuzz_jsonl", "mixed", '{"text": "caf\\u00e9 \\ud83d\\ude00"}\n\n  \n{"text": "a\\nb"}\r\n{"text": 4}\n'
                           '{"other": "x"}\n[1, 2]\n{"text": "no newline at the end"}')
put("fuzz_jsonl", "utf8", '{"text": "ünïcödé 日本 λο дa"}\n'.encode() + b'{"text": "bad \xc3\x28 byte"}\n'
                          b'{"text": "overlong \xc0\xaf"}\n{"text": "surrogate \xed\xa0\x80"}\n')
put("fuzz_jsonl", "empty", b"")
put("fuzz_jsonl", "blank", b"\n \n\t\n")
put("fuzz_jsonl", "malformed", '{"text": "a", }\n{"text": "b"\n{"text": "c"}\n')

# Regressions: inputs that broke an invariant before the fix (docs/trust.md, "Fuzzing").
h = json.dumps({"a": {"dtype": "F64", "shape": [1 << 61], "data_offsets": [0, 0]}})
put("fuzz_safetensors_header", "regress_shape_bytes_overflow", struct.pack("<Q", len(h)) + h.encode())
big = (1 << 63) - 1
put("fuzz_manifest", "regress_total_overflow", json.dumps(dict(
    manifest, num_tokens=0, num_documents=0,
    shards=[dict(manifest["shards"][0], num_tokens=big, num_documents=0),
            dict(manifest["shards"][1], num_tokens=big, num_documents=0)])))
put("fuzz_manifest", "regress_format_version_wrap", json.dumps(dict(manifest, format_version=(1 << 32) + 1)))
# An empty tensor at an unaligned offset: the copy-out path once called memcpy on a null pointer (UBSan).
put("fuzz_safetensors_header", "regress_unaligned_empty",
    safetensors({"a": ("I8", [1], 1), "b": ("F32", [0], 4), "c": ("I8", [3], 1)}, pad=False))

# fuzz_columnar: a format byte (even: Parquet, odd: Arrow IPC) and a small file of each kind (needs pyarrow).
try:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet_bytes(table, **kw):
        sink = io.BytesIO()
        pq.write_table(table, sink, **kw)
        return sink.getvalue()

    def ipc_bytes(table, stream):
        sink = pa.BufferOutputStream()
        with (pa.ipc.new_stream if stream else pa.ipc.new_file)(sink, table.schema) as w:
            w.write_table(table, max_chunksize=2)
        return sink.getvalue().to_pybytes()

    texts = pa.table({"text": ["a cat", "ünïcödé 日本", "", "x" * 40, "last"]})
    put("fuzz_columnar", "parquet_snappy", b"\x00" + parquet_bytes(texts, row_group_size=2))
    put("fuzz_columnar", "parquet_zstd", b"\x00" + parquet_bytes(texts, compression="zstd", row_group_size=3))
    put("fuzz_columnar", "parquet_null", b"\x00" + parquet_bytes(pa.table({"text": ["a", None, "b"]})))
    put("fuzz_columnar", "parquet_nocolumn", b"\x00" + parquet_bytes(pa.table({"body": ["a"], "n": [1]})))
    put("fuzz_columnar", "parquet_int", b"\x00" + parquet_bytes(pa.table({"text": [1, 2]})))
    put("fuzz_columnar", "arrow_file", b"\x01" + ipc_bytes(texts, stream=False))
    put("fuzz_columnar", "arrow_stream", b"\x01" + ipc_bytes(texts, stream=True))
    put("fuzz_columnar", "arrow_large", b"\x01" + ipc_bytes(texts.cast(pa.schema([("text", pa.large_string())])), True))
    put("fuzz_columnar", "empty_parquet", b"\x00")
    put("fuzz_columnar", "empty_arrow", b"\x01")
    # Regression: an Arrow IPC batch whose string offsets point past its data (found by fuzz_columnar).
    put("fuzz_columnar", "regress_ipc_offsets_past_data", bytes.fromhex(
        "01ffffffff700000001000000000000a000c000600050008000a000000000104000c00000008000800000004000800000004"
        "0000000100000014000000100014000800060007000c00000010001000000000000114100000001c00000004000000000000"
        "000400000074657874000000000400040004000000ffffffff9800000014000000000000000c0016000600050008000c000c"
        "0000000003040018000000580000000000000000000a0018000c00040008000a0000004c0000001000000002000000000000"
        "0000000000030000000000000000000000000000000000000000000000000000001800000000000000180000000000000040"
        "0000000000000000000000010000000200000000000000000000000000000000000000000000000500000000000000030000"
        "00000000000000000000000000000000000000000000000000180000000000000018000000000000002c0000000000000000"
        "0000000000000000000000000000000000000000000000100000000000000010000000000000000400000000000000000000"
        "00000e0100000001000000000000000000000000000000000000000000000004000000000000006c61737400000000ffffff"
        "ff00000000"))
    # Regression: a damaged Parquet row group of 0 rows (found by fuzz_columnar).
    put("fuzz_columnar", "regress_empty_row_group_damaged", bytes.fromhex(
        "00504152311504154615584c1506150012000028b52ffd202319010005000000612063617412000000c3bc6ec3af63c3b664"
        "c3a920e697000004010103021504192c35001806736368656d61150200150c254818047465787425004c1c000000160a192c"
        "191c26001c150c193500061019180474657874150c160616d00116f401267c26081c36002812c3bc6ec3af63c3b664c3a920"
        "e697a5e69cac1800111100192c15041500150200150015101502003c162e19061926000600000016d0011606260816f40100"
        "191c26001c150c193500061019180474657874150c160416a40216860226d00226fc011c3600282878787878787878787878"
        "78787878787878787878787878787878787878787878787878787878787818046c617374111100192c150415001502001500"
        "15101502003c165819061926000400000016a402160026fc0116860200191c180c4152524f573a736368656d6118a0012f2f"
        "2f2f2f33414141414151414141414141414b41417741426741464141674143674141414141424241414d4141414143414149"
        "4141414142414149414141414241414141414541414141554141414145414155414167414267414841417741414141514142"
        "41414141414141414546454141414142774141414145414141414141414141415141414142305a5868304141414141415141"
        "4241414541414141001820706172717565742d6370702d6172726f772076657273696f6e2032362e302e31191c1c000000e7"
        "01000050415231"))
    # Regression: a Parquet row group whose metadata claims 17.8 billion rows (found by fuzz_columnar).
    put("fuzz_columnar", "regress_row_group_claims_billions", bytes.fromhex(
        "005041523109200200000003610103021504192c35001806736368656d61150200150c250218047465787425004c1c000000"
        "1606191c191c26001c150c19350006101918047465787415021631167c168401263c26081c3702280162180161111100192c"
        "15041500150200150015101502003c1604190619260204000000167c16e6ffffff840100191c180c41520000006865637300"
        "6d6118a0012f2f2f2f2f33414141414151414141414141414b41417741426741464141674143674141414141424241414d41"
        "4141414341414941414141424141494141414142414141414145414141415541414141454141554141674142674148414177"
        "4141414151415a58683041414141414151414241414541414141001820706172717565742d63415141414142315a58683041"
        "414141414151414241414541414141001820706172717565742d6370702d6172726f772023657273696f6e2032362e302e31"
        "191c1c0000005401000050415231"))
except ImportError:
    print("pyarrow is not installed: fuzz_columnar's seeds left as they are")
