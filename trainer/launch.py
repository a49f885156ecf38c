"""`entropyscope train --nproc N`: start N worker processes wired as torchrun wires them (torch-free, so the
launcher itself starts in a blink; each worker imports torch and joins the process group)."""

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], nproc: int, program: list[str] | None = None) -> int:
    """Run `python -m trainer.cli ARGV` (or `program ARGV`) in `nproc` processes wired as torchrun wires
    them; the first failing worker's exit code (the others are then stopped), or 0."""
    port = str(free_port())
    procs = []
    for rank in range(nproc):
        env = os.environ | {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        procs.append(subprocess.Popen([*(program or [sys.executable, "-m", "trainer.cli"]), *argv], env=env))
    code = 0
    try:
        pending = list(procs)
        while pending:
            for proc in list(pending):
                try:
                    rc = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                pending.remove(proc)
                if rc != 0 and code == 0:
                    code = rc
                    for other in pending:  # a worker alone would wait for its peers forever
                        other.terminate()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code
