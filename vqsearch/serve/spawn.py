"""A real `vqsearch serve` in a child process, as a person starts it: for the browser test and the
served-latency benchmark, which must go through uvicorn and a socket, not a test client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SERVING = re.compile(r"serving .* on (http://\S+?)/ ")


@contextmanager
def served(db: Path, *args: str, timeout: float = 180.0) -> Iterator[str]:
    """`vqsearch serve --db DB --port 0 ARGS` (any free port); yields its base URL once it listens,
    and stops it (SIGTERM, then SIGKILL) at the end."""
    with tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, "-m", "vqsearch.cli", "serve", "--db", str(db), "--port", "0", *args]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                   text=True, env=os.environ.copy())
        try:
            yield _address(process, log, timeout)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _address(process: subprocess.Popen, log, timeout: float) -> str:
    """The URL the server says it serves on, once it has loaded the index and listens."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        log.seek(0)
        said = log.read()
        if found := SERVING.search(said):
            return found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"vqsearch serve exited with status {process.returncode}: {said.strip()}")
        time.sleep(0.1)
    raise RuntimeError(f"vqsearch serve did not start in {timeout:.0f} s")
