#!/usr/bin/env python3
"""Builds the ckptfs wheel for one architecture: the Python package beside
this file and a ckptfs binary built for linux/GOARCH with CGO_ENABLED=0.

    build_wheel.py --goarch amd64 --binary bin/linux-amd64/ckptfs --out dist

The binary is static (no libc, no loader), so one wheel per architecture
serves glibc (manylinux) and musl (musllinux) systems alike; it is refused if
it is not. The version is ../VERSION, the file the binary embeds. Standard
library only, so no build backend is fetched; the same inputs give the same
bytes (file times are fixed).
"""

import argparse
import base64
import hashlib
import io
import re
import struct
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "ckptfs"
PACKAGE_FILES = ("__init__.py", "__main__.py", "_cli.py", "pytest_plugin.py", "py.typed")
README = HERE.parents[2] / "README.md"

# GOARCH -> the wheel's machine name and the ELF e_machine of its binaries.
ARCHES = {"amd64": ("x86_64", 62), "arm64": ("aarch64", 183)}

SUMMARY = "A FUSE filesystem for model checkpoints: deduplicated, compressed, served as written, as one file or as HF shards"
ENTRY_POINTS = """\
[console_scripts]
ckptfs = ckptfs._cli:main

[pytest11]
ckptfs = ckptfs.pytest_plugin
"""
# Zip entries carry this time, so a rebuild is byte-identical.
EPOCH = (1980, 1, 1, 0, 0, 0)


def read_version() -> str:
    v = (HERE.parent / "VERSION").read_text().strip()
    if not re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", v):
        sys.exit(f"build_wheel: VERSION {v!r} is not a release version (1.2.3, 1.2.3rc1, 1.2.3.dev4)")
    return v


def platform_tags(machine: str) -> list:
    """manylinux2014 (glibc 2.17) is the oldest policy pip offers on aarch64;
    musllinux_1_1 the oldest musl one."""
    return [f"manylinux_2_17_{machine}", f"manylinux2014_{machine}", f"musllinux_1_1_{machine}"]


def check_static_elf(data: bytes, e_machine: int, path: str) -> None:
    """Refuses a binary that is not a 64-bit little-endian ELF executable
    for e_machine without an interpreter or dynamic section."""
    if data[:6] != b"\x7fELF\x02\x01":
        sys.exit(f"build_wheel: {path} is not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", data, 18)
    if machine != e_machine:
        sys.exit(f"build_wheel: {path} is built for ELF machine {machine}, not {e_machine}")
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type in (2, 3):  # PT_DYNAMIC, PT_INTERP
            sys.exit(f"build_wheel: {path} is dynamically linked: build it with CGO_ENABLED=0")


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def metadata(version: str) -> str:
    head = [
        "Metadata-Version: 2.1",
        "Name: ckptfs",
        f"Version: {version}",
        f"Summary: {SUMMARY}",
        "Project-URL: Source, https://github.com/ckptfs/ckptfs",
        "Requires-Python: >=3.9",
        "Classifier: Operating System :: POSIX :: Linux",
        "Classifier: Topic :: System :: Filesystems",
        "Classifier: Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Classifier: Framework :: Pytest",
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(head) + "\n\n" + README.read_text()


def build(goarch: str, binary: Path, out: Path) -> Path:
    machine, e_machine = ARCHES[goarch]
    version = read_version()
    exe = binary.read_bytes()
    check_static_elf(exe, e_machine, str(binary))
    tags = platform_tags(machine)
    dist_info = f"ckptfs-{version}.dist-info"
    wheel = "Wheel-Version: 1.0\nGenerator: ckptfs build_wheel.py\nRoot-Is-Purelib: false\n"
    wheel += "".join(f"Tag: py3-none-{t}\n" for t in tags)

    # (name in the wheel, bytes, executable)
    files = [(f"ckptfs/{f}", (PACKAGE / f).read_bytes(), False) for f in PACKAGE_FILES]
    files.append(("ckptfs/bin/ckptfs", exe, True))
    files += [
        (f"{dist_info}/METADATA", metadata(version).encode(), False),
        (f"{dist_info}/WHEEL", wheel.encode(), False),
        (f"{dist_info}/entry_points.txt", ENTRY_POINTS.encode(), False),
    ]
    record = "".join(f"{name},{record_hash(data)},{len(data)}\n" for name, data, _ in files)
    record += f"{dist_info}/RECORD,,\n"
    files.append((f"{dist_info}/RECORD", record.encode(), False))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, executable in files:
            info = zipfile.ZipInfo(name, EPOCH)
            info.create_system = 3  # Unix, so pip keeps the modes below
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ckptfs-{version}-py3-none-{'.'.join(tags)}.whl"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description="Build the ckptfs wheel for one architecture.")
    ap.add_argument("--goarch", required=True, choices=sorted(ARCHES))
    ap.add_argument("--binary", required=True, type=Path, help="ckptfs built for linux/GOARCH with CGO_ENABLED=0")
    ap.add_argument("--out", required=True, type=Path, help="folder for the wheel")
    args = ap.parse_args()
    path = build(args.goarch, args.binary, args.out)
    print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
