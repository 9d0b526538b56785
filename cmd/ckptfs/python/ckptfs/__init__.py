"""ckptfs from Python: mount a checkpoint store, name the views of a folder,
and read what the store holds.

Everything is done by the ckptfs binary this package carries (the program the
``ckptfs`` command runs); this module runs it and reads its ``--json`` output::

    import ckptfs
    from transformers import AutoModel

    with ckptfs.mount("/mnt/ckpt", store="/data/ckptfs") as mnt:
        model.save_pretrained(mnt / "run1")
        same = AutoModel.from_pretrained(ckptfs.view(mnt / "run1"))

The names are the command's: ``mount``, ``umount``, ``ls``, ``stat``; ``store``
is ``--store`` (``None``: ``$CKPTFS_STORE``, else ``~/.local/share/ckptfs``).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

__all__ = [
    "CkptfsError",
    "FuseUnavailable",
    "MountpointBusy",
    "binary",
    "ls",
    "mount",
    "stat",
    "umount",
    "view",
]

StrPath = Union[str, "os.PathLike[str]"]

FUSE3_INSTALL = "install fuse3: apt-get install -y fuse3 (Debian, Ubuntu) or dnf install -y fuse3 (Fedora, RHEL)"


class CkptfsError(RuntimeError):
    """A ckptfs command failed. The message is the error the command printed."""

    def __init__(self, message: str, returncode: int = 1) -> None:
        super().__init__(message)
        self.returncode = returncode


class FuseUnavailable(CkptfsError):
    """This machine cannot mount a FUSE file system: fusermount3 or /dev/fuse is missing."""


class MountpointBusy(CkptfsError):
    """Something is mounted at the mountpoint already."""


def __getattr__(name: str) -> Any:
    # The version lives in the wheel's metadata, written from the same file
    # the binary embeds; read it only when asked, so the console script
    # starts the binary without importing importlib.metadata.
    if name == "__version__":
        from importlib.metadata import version

        return version("ckptfs")
    raise AttributeError(f"module 'ckptfs' has no attribute {name!r}")


def binary() -> Path:
    """The path of the ckptfs binary bundled with this package."""
    return Path(__file__).resolve().parent / "bin" / "ckptfs"


def _run(args: List[str], store: Optional[StrPath] = None) -> str:
    """Runs the binary with args and returns its stdout; raises CkptfsError
    with its error message when it fails."""
    cmd = [os.fspath(binary())]
    if store is not None:
        cmd += ["--store", os.fspath(store)]
    r = subprocess.run(cmd + args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise CkptfsError(r.stderr.strip() or f"ckptfs {args[0]}: exit status {r.returncode}", r.returncode)
    return r.stdout


def _flag_args(flags: Dict[str, Any]) -> List[str]:
    """Command-line flags from keyword arguments: allow_other=True is
    --allow-other, deltas=False is --deltas=false (a flag on by default is
    turned off so), hot_size="1GiB" is --hot-size=1GiB, None leaves the flag
    out, a timedelta is given in seconds."""
    args = []
    for name, value in flags.items():
        if name == "foreground":
            raise ValueError("mount() returns once the mount is live: run 'ckptfs mount --foreground' to stay attached")
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append(f"{flag}=false")
        elif value is None:
            continue
        elif isinstance(value, datetime.timedelta):
            args.append(f"{flag}={value.total_seconds()}s")
        else:
            args.append(f"{flag}={value}")
    return args


def _check_fuse() -> None:
    if shutil.which("fusermount3") is None:
        raise FuseUnavailable(f"fusermount3 is not on PATH, and ckptfs mounts with it: {FUSE3_INSTALL}")
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable(
            "/dev/fuse is missing: load the fuse module (modprobe fuse), "
            "or give the container the device (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
        )


def _unescape(field: bytes) -> bytes:
    """Decodes the octal escapes of /proc/self/mountinfo (\\040 for a space)."""
    out, i = bytearray(), 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out += field[i : i + 1]
            i += 1
    return bytes(out)


def _is_mounted(path: Path) -> bool:
    """Whether something is mounted at path: os.path.ismount cannot tell for
    a FUSE mount whose daemon is gone (stat fails with ENOTCONN)."""
    target = os.fsencode(path)
    with open("/proc/self/mountinfo", "rb") as f:
        return any(len(fields) > 4 and _unescape(fields[4]) == target for fields in (line.split() for line in f))


@contextlib.contextmanager
def mount(mountpoint: StrPath, store: Optional[StrPath] = None, **flags: Any) -> Iterator[Path]:
    """Mounts the store at mountpoint for the body of a ``with`` block.

    Yields the mountpoint's absolute path once the mount is live. On exit,
    also when the body raises, it unmounts as ``ckptfs umount`` does: the
    daemon commits every file, chunks what it staged and closes the store
    before the block ends. A file still open or mapped keeps the mount busy,
    such as the weights file of a model loaded from the mount, mapped while
    the model lives: then the mount is detached (gone from the namespace at
    once), and its daemon goes on serving those files, commits the ones
    written when they are closed, and exits after the last. A file left open
    for writing, or a mount held by something else (another process, a
    working directory), gets a RuntimeWarning.

    Args:
        mountpoint: an empty directory, created (and removed after) if missing.
        store: the store directory (``--store``); None for the default.
        **flags: flags of ``ckptfs mount``, ``_`` for ``-``: ``allow_other=True``,
            ``deltas=False``, ``hot_size="1GiB"``, ``reclaim_after=timedelta(seconds=2)``,
            ``remote="s3://bucket/prefix"``.

    Raises:
        FuseUnavailable: fusermount3 or /dev/fuse is missing.
        MountpointBusy: something is mounted at mountpoint already.
        CkptfsError: the mount failed (mountpoint not empty, store mounted
            elsewhere, a bad flag); the message is the command's.
    """
    args = _flag_args(flags)
    _check_fuse()
    mnt = Path(mountpoint).resolve()
    if _is_mounted(mnt):
        raise MountpointBusy(f"{mnt} is a mount point already: unmount it first (ckptfs umount {mnt})")
    created = not mnt.exists()
    if created:
        mnt.mkdir(parents=True)
    try:
        _run(["mount", *args, str(mnt)], store)
        try:
            yield mnt
        finally:
            _release(mnt)
    finally:
        if created:
            with contextlib.suppress(OSError):
                mnt.rmdir()


def _release(mnt: Path) -> None:
    """Unmounts mnt, flushing. If it stays busy, detaches it lazily, warning
    unless this process alone holds it, and only to read (a model loaded
    from a view keeps its weights file mapped while it lives)."""
    for _ in range(2):
        try:
            umount(mnt)
            return
        except CkptfsError as e:
            if not _is_mounted(mnt):  # the body unmounted it itself
                return
            busy = e
        gc.collect()  # a file object the body dropped without closing it
    writing, held = _held_here(mnt)  # before the detach renames them
    umount(mnt, lazy=True)
    if writing:
        warnings.warn(
            f"{mnt}: {', '.join(writing)} still open for writing: detached the mount; "
            "its daemon commits them when they are closed, and exits after the last",
            RuntimeWarning,
            stacklevel=4,
        )
    elif not held:
        warnings.warn(
            f"{mnt} was still in use ({busy}), not by a file this process has open: "
            "detached the mount; its daemon exits once nothing uses it",
            RuntimeWarning,
            stacklevel=4,
        )


def _held_here(mnt: Path) -> Tuple[List[str], bool]:
    """The files under mnt this process has open for writing, and whether it
    holds any file or mapping under mnt at all."""
    prefix = f"{mnt}/"
    writing, held = [], False
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if not target.startswith(prefix):
                continue
            held = True
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (OSError, StopIteration):
            continue
        if flags & os.O_ACCMODE != os.O_RDONLY:
            writing.append(target)
    if not held:
        with open("/proc/self/maps") as f:
            held = any(len(parts) == 6 and parts[5].startswith(prefix) for parts in (line.rstrip("\n").split(maxsplit=5) for line in f))
    return writing, held


def umount(mountpoint: StrPath, lazy: bool = False) -> None:
    """Unmounts a ckptfs mount as ``ckptfs umount`` does: flushes, unmounts,
    and waits for the daemon to commit and chunk what it holds.

    Args:
        mountpoint: where the store is mounted.
        lazy: detach now even if files are open; the daemon finishes when the
            last one is closed.

    Raises:
        CkptfsError: mountpoint is not a ckptfs mount, or it is busy (a file
            or a working directory open in it) and lazy is False.
    """
    _run(["umount", *(["--lazy"] if lazy else []), str(Path(mountpoint).resolve())])


def view(path: StrPath, *, single: Optional[bool] = None, shards: Union[str, bool, None] = None) -> Path:
    """The path of a view of a folder with weights on a ckptfs mount.

    ``view(p)`` and ``view(p, single=True)`` are ``p@single`` (one
    model.safetensors), ``view(p, shards="2GB")`` is ``p@shards=2GB`` (an HF
    sharded folder with shards of at most 2GB), ``view(p, shards=True)`` is
    ``p@shards`` (5GB shards).

    Raises:
        ValueError: both or neither of single and shards are asked for.
        FileNotFoundError: the view does not exist: path is not a folder with
            weights (safetensors, PyTorch .bin or DCP) on a ckptfs mount, or
            shards is not a size.
    """
    if shards is not None and shards is not False:
        if single:
            raise ValueError("view: ask for single=True or shards=SIZE, not both")
        suffix = "@shards" if shards is True else f"@shards={shards}"
    elif single is False:
        raise ValueError("view: ask for single=True or shards=SIZE")
    else:
        suffix = "@single"
    folder = Path(path).absolute()
    v = folder.with_name(folder.name + suffix)
    if not v.is_dir():
        raise FileNotFoundError(f"{v}: no such view: {folder} is not a folder with weights on a ckptfs mount")
    return v


def stat(name: Optional[str] = None, store: Optional[StrPath] = None) -> Dict[str, Any]:
    """``ckptfs stat --json [NAME]``: the files and the logical, unique
    (deduplicated) and stored (compressed) bytes of checkpoint name, or of the
    whole store when name is None, as a dict with the keys name, store, files,
    logical_bytes, unique_bytes, stored_bytes, dedup_ratio, compression_ratio,
    staged_files, staged_bytes, hot_bytes, pending_upload_chunks and
    pending_upload_bytes. Works whether the store is mounted or not.

    Raises:
        CkptfsError: no such checkpoint, or the store cannot be opened.
    """
    return json.loads(_run(["stat", "--json", *([name] if name is not None else [])], store))


def ls(store: Optional[StrPath] = None) -> List[Dict[str, Any]]:
    """``ckptfs ls --json``: the top of the store, one dict a checkpoint with
    the keys name, type (dir, file or symlink), files, logical_bytes and views
    (["NAME@single", "NAME@shards"] for a folder with weights). Works whether
    the store is mounted or not.

    Raises:
        CkptfsError: the store cannot be opened.
    """
    return json.loads(_run(["ls", "--json"], store))
