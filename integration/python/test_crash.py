"""kill -9 of the daemon while save_pretrained writes into the mount."""

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Mount, assert_same_state

SAVE = ("import sys; from transformers import AutoModel; "
        "AutoModel.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2], max_shard_size='20MB')")


def digests(folder: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_kill_during_save_pretrained(tmp_path, minilm_dir, reference):
    from transformers import AutoModel

    expected = tmp_path / "expected"  # the same save on local disk, to compare bytes with
    subprocess.run([sys.executable, "-c", SAVE, str(minilm_dir), str(expected)], check=True)
    want = digests(expected)

    m = Mount(tmp_path)
    subprocess.run([sys.executable, "-c", SAVE, str(minilm_dir), str(m / "before")], check=True)
    for attempt in range(3):
        writer = subprocess.Popen([sys.executable, "-c", SAVE, str(minilm_dir), str(m / f"during{attempt}")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        during = m / f"during{attempt}"
        deadline = time.time() + 60
        while not during.exists() and time.time() < deadline:  # the save has begun
            time.sleep(0.01)
        time.sleep(random.Random(attempt).uniform(0, 0.6))
        os.kill(m.pid(), signal.SIGKILL)
        writer.wait(timeout=120)  # fails: the mount is gone
        subprocess.run(["fusermount3", "-u", "-z", str(m.dir)], check=True)
        m = Mount(tmp_path)  # remount the same store
        assert digests(m / "before") == want
        assert_same_state(AutoModel.from_pretrained(m / "before@single").state_dict(), reference["state"])
        if during.exists():
            for name, digest in digests(during).items():
                data = (during / name).read_bytes()
                # every file is complete or empty (cp-like truncate first), never half written
                assert data == b"" or hashlib.sha256(data).hexdigest() == want.get(name), name
    m.close()
    fsck = subprocess.run([os.environ.get("CKPTFS_BIN", "bin/ckptfs"), "--store", str(m.store), "fsck"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
