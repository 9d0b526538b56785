"""The ckptfs console script: becomes the bundled binary."""

import os
import signal
import sys

from ckptfs import binary


def main() -> int:
    """Replaces this process with the bundled ckptfs binary, given the same
    arguments: its exit status and signals are the binary's own (Ctrl-C on
    'ckptfs mount --foreground' unmounts). Returns only if it cannot run."""
    exe = os.fspath(binary())
    # Python ignores these at startup, and an ignored signal stays ignored
    # across exec: give the binary what a shell would.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execv(exe, [sys.argv[0], *sys.argv[1:]])
    except OSError as e:
        print(f"ckptfs: cannot run the bundled binary {exe}: {e.strerror}", file=sys.stderr)
    return 127
