"""Faults for test_ray.py, injected into its Ray cluster's workers by a worker set-up hook.

A video whose name starts with "flaky" fails its first attempt at each work unit with a
RuntimeError (a transient fault); one whose name starts with "broken" fails every attempt with a
VQSearchError (as a file that does not decode). Every attempt is counted in a file beside the
video, `<name>.<first sampled frame>.attempts`.
"""

from __future__ import annotations

import functools
from pathlib import Path


def attempts(video: Path, first: int = 0) -> int:
    counts = video.with_name(f"{video.name}.{first}.attempts")
    return len(counts.read_text()) if counts.exists() else 0


def inject_faults() -> None:
    import indexer.distributed as distributed
    from vqsearch.errors import VQSearchError

    def faulty(work):
        @functools.wraps(work)
        def run(model, info, fps, span=None, **kwargs):
            name = info.path.name
            if name.startswith(("flaky", "broken")):
                with info.path.with_name(f"{name}.{span[0] if span else 0}.attempts").open("a") as counts:
                    counts.write("x")
                if name.startswith("broken"):
                    raise VQSearchError(f"cannot decode {info.path} (injected)")
                if attempts(info.path, span[0] if span else 0) == 1:
                    raise RuntimeError("injected transient fault")
            return work(model, info, fps, *([span] if span else []), **kwargs)

        return run

    distributed.index_video = faulty(distributed.index_video)
    distributed.track_frames = faulty(distributed.track_frames)
