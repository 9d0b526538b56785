"""ckptfs as pip installs it: the wheel in a fresh venv, with no Go on PATH.

make wheel-test installs dist/ckptfs-*.whl into a new venv and runs this file
with that venv's python. pytest, torch and transformers come from the test
venv through PYTHONPATH (it holds no ckptfs); test_installed_alone_in_a_fresh_venv
mounts from the new venv without them. Where ckptfs is not installed (make
python) the file is skipped, and CKPTFS_REQUIRE_WHEEL makes that a failure.
"""

import base64
import gc
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from conftest import assert_same_state, embed

if os.environ.get("CKPTFS_REQUIRE_WHEEL"):
    import ckptfs
else:
    ckptfs = pytest.importorskip("ckptfs", reason="the wheel is not installed: make wheel-test runs this file")

REPO = Path(__file__).resolve().parents[2]
VERSION = (REPO / "cmd" / "ckptfs" / "VERSION").read_text().strip()
WHEELS = Path(os.environ.get("CKPTFS_WHEEL_DIR", REPO / "dist"))
VENV = Path(sys.prefix)
FUSE3_INSTALL = ("apt-get install -y fuse3", "dnf install -y fuse3")


def mounted(path) -> bool:
    with open("/proc/mounts") as f:
        return str(path) in (line.split()[1] for line in f)


def bare_env(**extra) -> dict:
    """The environment without PYTHONPATH: the fresh venv holds the wheel alone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kw)


def daemon_pid(store: Path) -> int:
    return int((store / "mount.pid").read_text().split()[0])


def wait_gone(pid: int, seconds: float = 60) -> bool:
    deadline = time.time() + seconds
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.05)
    return not Path(f"/proc/{pid}").exists()


def test_installed_alone_in_a_fresh_venv(tmp_path):
    """The wheel needs nothing but fuse3: a venv holding only it mounts a
    store, saves into it and reads it back, with no Go on PATH."""
    assert Path(ckptfs.__file__).is_relative_to(VENV), ckptfs.__file__
    for p in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        assert not (Path(p) / "ckptfs").exists(), p
    assert shutil.which("go") is None
    assert shutil.which("ckptfs") == str(VENV / "bin" / "ckptfs")
    script = textwrap.dedent("""
        import sys
        import ckptfs
        try:
            import torch
            sys.exit("torch is importable: the venv is not bare")
        except ImportError:
            pass
        mnt, store = sys.argv[1:]
        with ckptfs.mount(mnt, store=store) as m:
            (m / "ckpt").mkdir()
            (m / "ckpt" / "a.txt").write_text("saved")
            print([c["name"] for c in ckptfs.ls(store=store)], ckptfs.stat("ckpt", store=store)["logical_bytes"])
    """)
    store = tmp_path / "store"
    r = run(VENV / "bin" / "python", "-c", script, tmp_path / "mnt", store, env=bare_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout == "['ckpt'] 5\n"
    assert not mounted(tmp_path / "mnt")
    assert ckptfs.stat("ckpt", store=store)["files"] == 1


def test_version_and_help():
    r = run("ckptfs", "--version")
    assert (r.returncode, r.stdout) == (0, f"ckptfs version {VERSION}\n"), r.stderr
    assert ckptfs.__version__ == VERSION
    r = run("ckptfs", "--help")
    assert r.returncode == 0, r.stderr
    assert "--version" in r.stdout and "mount" in r.stdout and "umount" in r.stdout


def test_console_script_is_the_binary(tmp_path):
    """The console script execs the binary: same output and exit status,
    and Ctrl-C on mount --foreground reaches the binary, which unmounts."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    for args in (["stat", "nosuch"], ["nosuch-command"], ["mount"]):
        script = run("ckptfs", "--store", store, *args)
        direct = run(ckptfs.binary(), "--store", store, *args)
        assert script.returncode != 0
        assert (script.returncode, script.stdout, script.stderr) == (direct.returncode, direct.stdout, direct.stderr)
    mnt.mkdir()
    p = subprocess.Popen(["ckptfs", "--store", str(store), "mount", "--foreground", str(mnt)])
    try:
        deadline = time.time() + 30
        while not mounted(mnt) and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert mounted(mnt), p.poll()
        assert os.readlink(f"/proc/{p.pid}/exe") == str(ckptfs.binary())
        (mnt / "f").write_bytes(b"x" * 100)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 0
        assert not mounted(mnt)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
    assert ckptfs.stat("f", store=store)["logical_bytes"] == 100


def test_save_pretrained_and_single_view(tmp_path, minilm_dir, reference):
    """The README's example: save_pretrained into the mount, from_pretrained
    of NAME@single, the same embeddings as from the original folder."""
    store = tmp_path / "store"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, pid = save_and_load(tmp_path / "mnt", store, minilm_dir, reference)
    assert not mounted(tmp_path / "mnt")
    assert not (tmp_path / "mnt").exists()  # mount() made it, and removes it
    # The model keeps the view's weights file mapped: the daemon serves it
    # after the exit detached the mount, and goes when the model does.
    assert torch.equal(embed(model, reference["tokenizer"]), reference["embeddings"])
    del model
    gc.collect()
    assert wait_gone(pid)


def save_and_load(mnt, store, minilm_dir, reference):
    with ckptfs.mount(mnt, store=store, hot_size="0", deltas=False) as mnt:
        assert mounted(mnt)
        pid = daemon_pid(store)
        args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        assert "--hot-size=0" in args and "--deltas=false" in args
        AutoModel.from_pretrained(minilm_dir).save_pretrained(mnt / "minilm")
        single = ckptfs.view(mnt / "minilm")
        assert single == mnt / "minilm@single"
        model = AutoModel.from_pretrained(single).eval()
        assert_same_state(model.state_dict(), reference["state"])
        assert torch.equal(embed(model, reference["tokenizer"]), reference["embeddings"])
        assert ckptfs.view(mnt / "minilm", shards="30MB") == mnt / "minilm@shards=30MB"
        assert ckptfs.view(mnt / "minilm", shards=True) == mnt / "minilm@shards"

        files = [p for p in (mnt / "minilm").iterdir()]
        (row,) = ckptfs.ls(store=store)
        assert row == {"name": "minilm", "type": "dir", "files": len(files),
                       "logical_bytes": sum(p.stat().st_size for p in files),
                       "views": ["minilm@single", "minilm@shards"]}
        st = ckptfs.stat("minilm", store=store)
        assert (st["name"], st["files"], st["logical_bytes"]) == ("minilm", row["files"], row["logical_bytes"])
    return model, pid


def test_exit_unmounts_when_the_body_raises(tmp_path):
    class Boom(Exception):
        pass

    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with pytest.raises(Boom):
        with ckptfs.mount(mnt, store=store) as m:
            (m / "run").mkdir()
            (m / "run" / "saved.bin").write_bytes(b"s" * 4096)
            raise Boom
    assert not mounted(mnt)
    assert ckptfs.stat("run/saved.bin", store=store)["logical_bytes"] == 4096

    # A file left open keeps the mount busy: detached lazily, with a
    # warning; the file's close commits it and the daemon exits after.
    with pytest.warns(RuntimeWarning, match="open.bin still open for writing"), pytest.raises(Boom):
        with ckptfs.mount(mnt, store=store) as m:
            pid = daemon_pid(store)
            f = open(m / "run" / "open.bin", "wb")
            f.write(b"o" * 1000)
            raise Boom
    assert not mounted(mnt)
    f.write(b"o" * 24)
    f.close()
    assert wait_gone(pid)
    assert ckptfs.stat("run/open.bin", store=store)["logical_bytes"] == 1024


def test_clear_errors(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with ckptfs.mount(mnt, store=store) as m:
        with pytest.raises(ckptfs.MountpointBusy, match="is a mount point already"):
            with ckptfs.mount(m, store=tmp_path / "other"):
                pass
        with pytest.raises(ckptfs.CkptfsError, match=f"store {store} is mounted at {m}"):
            with ckptfs.mount(tmp_path / "second", store=store):
                pass
        assert not (tmp_path / "second").exists()
        (m / "plain").mkdir()
        (m / "plain" / "notes.txt").write_text("no weights")
        with pytest.raises(FileNotFoundError, match="not a folder with weights"):
            ckptfs.view(m / "plain")
        with pytest.raises(ValueError):
            ckptfs.view(m / "plain", single=True, shards="1GB")
        with pytest.raises(ckptfs.CkptfsError, match="no such file or directory|not found"):
            ckptfs.stat("nosuch", store=store)
        assert [c["name"] for c in ckptfs.ls(store=store)] == ["plain"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").touch()
    with pytest.raises(ckptfs.CkptfsError, match="is not empty"):
        with ckptfs.mount(full, store=store):
            pass
    with pytest.raises(ckptfs.CkptfsError, match="unknown flag: --no-such-flag"):
        with ckptfs.mount(mnt, store=store, no_such_flag=True):
            pass
    with pytest.raises(ValueError, match="--foreground"):
        with ckptfs.mount(mnt, store=store, foreground=True):
            pass
    assert not mounted(mnt)


def test_fuse3_missing_says_how_to_install_it(tmp_path):
    """Without fusermount3 on PATH, mount() and the command name the
    package and how to install it."""
    env = bare_env(PATH=str(VENV / "bin"))
    script = textwrap.dedent("""
        import sys
        import ckptfs
        try:
            with ckptfs.mount(sys.argv[1], store=sys.argv[2]):
                pass
        except ckptfs.FuseUnavailable as e:
            print(e)
    """)
    r = run(VENV / "bin" / "python", "-c", script, tmp_path / "mnt", tmp_path / "store", env=env)
    assert r.returncode == 0, r.stderr
    assert "fusermount3" in r.stdout and all(cmd in r.stdout for cmd in FUSE3_INSTALL), r.stdout
    (tmp_path / "mnt").mkdir()
    r = run(VENV / "bin" / "ckptfs", "--store", tmp_path / "store", "mount", tmp_path / "mnt", env=env)
    assert r.returncode == 1
    assert "fusermount3 not found" in r.stderr and all(cmd in r.stderr for cmd in FUSE3_INSTALL), r.stderr
    assert not mounted(tmp_path / "mnt")


def test_fixture_in_a_users_test_file(tmp_path):
    """A test file outside the repo gets ckptfs_mount from the wheel's
    pytest11 entry point (no conftest, no -p) and CKPTFS_STORE with it."""
    user, report = tmp_path / "user", tmp_path / "report"
    user.mkdir()
    (user / "test_user.py").write_text(textwrap.dedent("""
        import os
        import ckptfs

        def test_save(ckptfs_mount):
            (ckptfs_mount / "run1").mkdir()
            (ckptfs_mount / "run1" / "weights.bin").write_bytes(b"w" * 1000)
            assert [c["name"] for c in ckptfs.ls()] == ["run1"]
            with open(os.environ["REPORT"], "w") as f:
                f.write(str(ckptfs_mount) + "\\n" + os.environ["CKPTFS_STORE"])
    """))
    r = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py", cwd=user,
            env=dict(os.environ, REPORT=str(report)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    mnt, store = report.read_text().split("\n")
    assert not mounted(mnt)
    assert ckptfs.stat("run1", store=store)["logical_bytes"] == 1000


def elf_header(data: bytes):
    """The ELF machine of a binary and the types of its program headers."""
    (machine,) = struct.unpack_from("<H", data, 18)
    (phoff,) = struct.unpack_from("<Q", data, 32)
    entry, count = struct.unpack_from("<HH", data, 54)
    return machine, {struct.unpack_from("<I", data, phoff + i * entry)[0] for i in range(count)}


@pytest.mark.parametrize("machine,e_machine", [("x86_64", 62), ("aarch64", 183)])
def test_wheel_tags_and_contents(machine, e_machine):
    platforms = [f"manylinux_2_17_{machine}", f"manylinux2014_{machine}", f"musllinux_1_1_{machine}"]
    wheel = WHEELS / f"ckptfs-{VERSION}-py3-none-{'.'.join(platforms)}.whl"
    assert wheel.exists(), sorted(WHEELS.iterdir())
    dist_info = f"ckptfs-{VERSION}.dist-info"
    package = ["__init__.py", "__main__.py", "_cli.py", "pytest_plugin.py", "py.typed"]
    want = [f"ckptfs/{f}" for f in package] + ["ckptfs/bin/ckptfs"]
    want += [f"{dist_info}/{f}" for f in ("METADATA", "WHEEL", "entry_points.txt", "RECORD")]

    listing = run(sys.executable, "-m", "zipfile", "-l", wheel)
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[0] for line in listing.stdout.splitlines()[1:]]
    assert sorted(names) == sorted(want)

    with zipfile.ZipFile(wheel) as z:
        read = {n: z.read(n) for n in names}
        assert re.findall(r"^Tag: (.+)$", read[f"{dist_info}/WHEEL"].decode(), re.M) == [f"py3-none-{p}" for p in platforms]
        assert "Root-Is-Purelib: false" in read[f"{dist_info}/WHEEL"].decode()
        meta = read[f"{dist_info}/METADATA"].decode()
        assert re.search(r"^Name: ckptfs$", meta, re.M) and re.search(rf"^Version: {re.escape(VERSION)}$", meta, re.M)
        entry_points = read[f"{dist_info}/entry_points.txt"].decode()
        assert "[console_scripts]\nckptfs = ckptfs._cli:main\n" in entry_points
        assert "[pytest11]\nckptfs = ckptfs.pytest_plugin\n" in entry_points

        record = {}
        for line in read[f"{dist_info}/RECORD"].decode().splitlines():
            name, digest, size = line.rsplit(",", 2)
            record[name] = (digest, size)
        assert sorted(record) == sorted(want)
        for name, data in read.items():
            if name != f"{dist_info}/RECORD":
                sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert record[name] == (f"sha256={sha}", str(len(data))), name

        # One binary, static, for the wheel's machine, executable.
        assert [n for n, data in read.items() if data.startswith(b"\x7fELF")] == ["ckptfs/bin/ckptfs"]
        exe = read["ckptfs/bin/ckptfs"]
        assert exe[4:6] == b"\x02\x01"  # 64-bit, little-endian
        got_machine, segments = elf_header(exe)
        assert got_machine == e_machine
        assert not segments & {2, 3}, "PT_DYNAMIC or PT_INTERP: not a static binary"
        assert z.getinfo("ckptfs/bin/ckptfs").external_attr >> 16 == 0o100755
        for f in package:
            assert read[f"ckptfs/{f}"] == (REPO / "cmd" / "ckptfs" / "python" / "ckptfs" / f).read_bytes(), f
    if machine == os.uname().machine:
        assert ckptfs.binary().read_bytes() == exe
        assert os.access(ckptfs.binary(), os.X_OK)
