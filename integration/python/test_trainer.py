"""HF Trainer saving into the mount as a training job does for days: a
checkpoint every step, the last two kept. The run resumes from the mount,
and the store's disk, while still mounted, stays within 1.2x of what the
same run leaves in a local output_dir."""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from conftest import SENTENCES, Mount

STEPS = 12
# The space of the rotated checkpoints is back within --reclaim-after (5 s)
# plus two passes (the README's bound), about 10 s on a quiet machine. Under
# make test, every suite side by side, passes take longer, each waits four
# times the last, and the background delta encoder's rewrite of the newest
# checkpoint but one is a change of its own: the wait is a timeout, the time
# it took is printed, and its figure is make bench-dedup's.
RECLAIM_WAIT_S = 120


def du(path: Path) -> int:
    """Bytes of disk used under path, as du counts them (blocks allocated:
    Badger maps its files sparse at their full size while open)."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def where_the_bytes_are(store: Path) -> str:
    """The store's folders by size, and what the daemon's reclaim passes,
    settler and delta encoder logged: the story of a store that stayed big."""
    out = subprocess.run(["du", "-s", "-B1M", *map(str, sorted(store.iterdir()))], capture_output=True, text=True)
    log = (store / "ckptfs.log").read_text(errors="replace").splitlines()
    said = [line for line in log if "level=DEBUG" not in line or any(w in line for w in ("reclaim", "delta", "staged"))]
    return "MiB by folder:\n" + out.stdout + "daemon log:\n" + "\n".join(said[-80:])


def train(minilm_dir: Path, output_dir: Path, max_steps: int, resume: bool = False, keep: int | None = 2):
    """Trains to max_steps, keeping the last `keep` checkpoints (None: all),
    and returns the trainer, the seconds it took and the steps this call
    ran."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback,
                              TrainingArguments)

    class CountSteps(TrainerCallback):
        ran = 0

        def on_step_end(self, args, state, control, **kwargs):
            CountSteps.ran += 1

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    texts = (SENTENCES * 16)[:32]
    enc = tok(texts, padding="max_length", max_length=32, truncation=True)
    data = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": i % 2}
            for i in range(len(texts))]
    args = TrainingArguments(output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4,
                             save_steps=1, save_total_limit=keep, use_cpu=True, report_to=[], logging_steps=1,
                             disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[CountSteps()])
    start = time.monotonic()
    trainer.train(resume_from_checkpoint=True if resume else None)
    return trainer, time.monotonic() - start, CountSteps.ran


def test_trainer_rotates_checkpoints_in_the_mount(minilm_dir, record_property):
    root = Path(tempfile.mkdtemp(prefix="ckptfs-trainer-"))
    m = Mount(root)
    try:
        local = root / "local"
        _, local_s, _ = train(minilm_dir, local, STEPS)
        local_bytes = du(local)

        out = m / "out"
        _, mount_s, _ = train(minilm_dir, out, STEPS)
        assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == \
            [f"checkpoint-{STEPS - 1}", f"checkpoint-{STEPS}"]
        # Every file of the last checkpoint as the local run wrote it: the
        # same seed and data on CPU give the same bytes.
        for f in sorted((local / f"checkpoint-{STEPS}").iterdir()):
            if f.name in ("trainer_state.json",):
                continue  # holds timings
            got = (out / f"checkpoint-{STEPS}" / f.name).read_bytes()
            if f.suffix == ".safetensors":
                assert got == f.read_bytes(), f.name

        at_end = du(m.store)
        deadline = time.monotonic() + RECLAIM_WAIT_S
        waited = time.monotonic()
        while True:
            store_bytes = du(m.store)
            if store_bytes <= 1.2 * local_bytes or time.monotonic() > deadline:
                break
            time.sleep(1)
        waited = time.monotonic() - waited
        ratio = store_bytes / local_bytes
        record_property("trainer", {"steps": STEPS, "local_bytes": local_bytes, "store_bytes": store_bytes,
                                    "ratio": ratio, "local_s": local_s, "mount_s": mount_s})
        print(f"\ntrainer: {STEPS} steps, {STEPS} saves; local output_dir {local_bytes / 2**20:.0f} MiB "
              f"in {local_s:.2f} s; store while mounted {at_end / 2**20:.0f} MiB at the last save, "
              f"{store_bytes / 2**20:.0f} MiB ({ratio:.2f}x) {waited:.0f} s later "
              f"in {mount_s:.2f} s ({mount_s / local_s:.2f}x)")
        assert ratio <= 1.2, (f"store {store_bytes} bytes while mounted, local output_dir {local_bytes}; "
                              f"{where_the_bytes_are(m.store)}")

        trainer, _, ran = train(minilm_dir, out, STEPS + 2, resume=True)
        assert trainer.state.global_step == STEPS + 2
        assert ran == 2, f"resumed from checkpoint-{STEPS}, yet ran {ran} steps"
        assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == \
            [f"checkpoint-{STEPS + 1}", f"checkpoint-{STEPS + 2}"]
        r = m.cli("fsck")
        assert " 0 problems" in r.stdout, r.stdout
    finally:
        m.close()
        shutil.rmtree(root, ignore_errors=True)
