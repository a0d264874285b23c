"""Shared fixtures: the ../shared data (a failure under CI when absent) and a private model cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

# Exported ONNX models and label embeddings go to one cache per test session, not ~/.cache, and
# go with it (about 300 MB a session).
_OWN_CACHE = None if "VQSEARCH_CACHE" in os.environ else tempfile.mkdtemp(prefix="vqsearch-test-cache-")
if _OWN_CACHE is not None:
    os.environ["VQSEARCH_CACHE"] = _OWN_CACHE


def pytest_sessionfinish(session, exitstatus) -> None:
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEOS = SHARED / "data" / "videos"


def missing(what: str) -> NoReturn:
    """Skip a test whose data or tool is absent, except under CI, where skipping would prove nothing."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing under CI: the tests that need it must run")
    pytest.skip(f"{what} not present")


def need_shared(path: Path) -> Path:
    if not path.exists():
        missing(str(path))
    return path


def vqsearch(*args: str) -> subprocess.CompletedProcess:
    """The `vqsearch` command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "vqsearch.cli", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)


def downgrade(db: Path | str, version: str) -> None:
    """Take the index at `db` (a directory or a URL) back to schema `version` as the vqsearch of
    that version left it: without alembic_version (it came with the migrations) and, before 3,
    without colour files."""
    from alembic import command
    from sqlalchemy import text

    from vqsearch.store import locate
    from vqsearch.migrations import config

    index = locate(db)
    engine = index.engine()
    with engine.begin() as connection:
        command.downgrade(config(connection), version)
        connection.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    if int(version) < 3:
        for path in index.vectors.glob("colour-*.faiss"):
            path.unlink()


@pytest.fixture(scope="session")
def videos() -> Path:
    return need_shared(VIDEOS)


@pytest.fixture(scope="session")
def indexed_db(videos: Path, tmp_path_factory) -> Path:
    """bedroom.mp4 indexed once per session by the embedded model; tests change copies of it."""
    root = tmp_path_factory.mktemp("indexed") / "db"
    done = vqsearch("index", str(videos / "bedroom.mp4"), "--db", str(root))
    assert done.returncode == 0, done.stderr
    return root


SAMPLE_VIDEOS = ("02_cups.mp4", "04_coffee.mp4", "bedroom.mp4")


@pytest.fixture(scope="session")
def sample_db(videos: Path, tmp_path_factory) -> Path:
    """The three sample videos indexed once per session by the embedded model; tests read it only."""
    root = tmp_path_factory.mktemp("samples") / "db"
    done = vqsearch("index", *(str(videos / name) for name in SAMPLE_VIDEOS), "--db", str(root))
    assert done.returncode == 0, done.stderr
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under root, by relative path: to show nothing changed."""
    return {str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
            for path in sorted(root.rglob("*"))}


@pytest.fixture(scope="session")
def ball_crop(videos: Path, tmp_path_factory) -> Path:
    """The yellow ball in 02_cups.mp4 at frame 0 (box x=366, y=428, w=72, h=70), as a PNG."""
    import decord
    from PIL import Image

    frame = decord.VideoReader(str(videos / "02_cups.mp4"))[0].asnumpy()
    path = tmp_path_factory.mktemp("crops") / "ball.png"
    Image.fromarray(frame[428:498, 366:438]).save(path)
    return path
