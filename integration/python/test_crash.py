"""kill -9 of the daemon while save_pretrained writes into the mount."""

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from conftest import Mount, assert_same_state, in_thread


def digests(folder: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_kill_during_save_pretrained(tmp_path, minilm_dir, reference):
    from transformers import AutoModel

    # One model saved by threads of this process: a Python that imports
    # transformers per save cost five times the test's own work.
    model = AutoModel.from_pretrained(minilm_dir)

    def save(dst: Path):
        model.save_pretrained(dst, max_shard_size="20MB")

    expected = tmp_path / "expected"  # the same save on local disk, to compare bytes with
    save(expected)
    want = digests(expected)

    m = Mount(tmp_path)
    cut = 0  # saves the kill interrupted
    try:
        began = time.time()
        save(m / "before")
        took = time.time() - began  # each kill lands within the first half of a save this long
        for attempt in range(4):
            during = m / f"during{attempt}"
            writer = in_thread(save, during)
            deadline = time.time() + 60
            while not during.exists() and time.time() < deadline:  # the save has begun
                time.sleep(0.01)
            time.sleep(random.Random(attempt).uniform(0, took / 2))
            os.kill(m.pid(), signal.SIGKILL)
            # fails (the mount is gone), unless the save ended first; a save
            # still stuck after two minutes fails the test
            cut += writer.exception(timeout=120) is not None
            subprocess.run(["fusermount3", "-u", "-z", str(m.dir)], check=True)
            m = Mount(tmp_path)  # remount the same store
            assert digests(m / "before") == want
            assert_same_state(AutoModel.from_pretrained(m / "before@single").state_dict(), reference["state"])
            if during.exists():
                for name, digest in digests(during).items():
                    data = (during / name).read_bytes()
                    # every file is complete or empty (cp-like truncate first), never half written
                    assert data == b"" or hashlib.sha256(data).hexdigest() == want.get(name), name
        assert cut > 0, "every kill came after its save had ended"
    finally:  # a failure leaves no mount behind, killed or not
        m.close()
    fsck = subprocess.run([os.environ.get("CKPTFS_BIN", "bin/ckptfs"), "--store", str(m.store), "fsck"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
