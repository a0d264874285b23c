"""`vqsearch serve` as a command: safe by default, and one line when it cannot start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vqsearch.serve.limits import is_loopback
from vqsearch.serve.spawn import served


def serve(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VQSEARCH_TOKEN"}
    return subprocess.run([sys.executable, "-m", "vqsearch.cli", "serve", *args], capture_output=True, text=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def one_line(run: subprocess.CompletedProcess, says: str) -> None:
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr and says in run.stderr, run.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com"])
def test_a_host_beyond_this_machine_needs_a_token(tmp_path, host):
    one_line(serve("--db", str(tmp_path / "db"), "--host", host), f"--host {host} is not a loopback address")
    assert not (tmp_path / "db").exists()


def test_loopback_hosts():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "my-host"]))


def test_a_taken_port_or_a_db_that_is_a_file_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        one_line(serve("--db", str(tmp_path / "db"), "--port", str(port)), f"cannot listen on 127.0.0.1:{port}")
    (tmp_path / "file").write_text("not an index")
    one_line(serve("--db", str(tmp_path / "file"), "--host", "0.0.0.0", "--token", "t", "--port", "0"),
             "is a file, not a directory")
    url = f"postgresql+psycopg://me:secret@127.0.0.1:1/x?vectors={tmp_path / 'vectors'}"
    run = serve("--db", url, "--port", "0")
    one_line(run, "serves an index directory, not a database URL")
    assert "secret" not in run.stderr and not (tmp_path / "vectors").exists()


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_token_from_the_environment_guards_every_api_call(tmp_path, monkeypatch):
    monkeypatch.setenv("VQSEARCH_TOKEN", "from-env")
    with served(Path(tmp_path / "db")) as url:  # an empty index: the server starts without a model
        assert get(f"{url}/api/health") == (401, {"error": "this server needs its token: send the header "
                                                            "Authorization: Bearer <token>"})
        assert get(f"{url}/api/health", "wrong")[0] == 401
        assert get(f"{url}/api/health", "from-env") == (200, {"ok": True, "model": None, "videos": 0, "tracks": 0})
        with urllib.request.urlopen(f"{url}/", timeout=30) as page:  # the page itself loads without it
            assert page.status == 200 and b"vqsearch" in page.read()
