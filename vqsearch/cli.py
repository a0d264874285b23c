"""The `vqsearch` command line (contract: ../shared/docs/contract.md).

Imports are lazy: every call pays for what it loads, and `query` should not pay for torch.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

try:
    import typer

    from vqsearch.errors import VQSearchError
except KeyboardInterrupt:  # Ctrl-C while starting up: nothing was read or written yet
    sys.stderr.write("vqsearch: interrupted\n")
    sys.exit(130)

if TYPE_CHECKING:
    from indexer.distributed import RaySettings
    from indexer.pipeline import IndexedVideo

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Where did I last see it? Index videos into region track tokens; query by text or crop.")

DbOption = typer.Option(
    None, "--db", help="The index: a directory, or postgresql+psycopg://USER@HOST[:PORT]/DBNAME?vectors=DIR "
    "(metadata on PostgreSQL, FAISS files in DIR, an absolute path every machine sees; README: Metadata on "
    "PostgreSQL). Default: $VQSEARCH_DB, else ./vqsearch-db.")
Sam2ConfigOption = typer.Option(None, "--sam2-config", envvar="VQSEARCH_SAM2_CONFIG",
                                help="SAM 2 config name or YAML (e.g. configs/sam2.1/sam2.1_hiera_t.yaml).")
Sam2CheckpointOption = typer.Option(None, "--sam2-checkpoint", envvar="VQSEARCH_SAM2_CHECKPOINT",
                                    help="Local SAM 2 checkpoint for box refinement and tracking.")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")
DeviceOption = typer.Option("auto", "--device", help="auto (a GPU when there is one), cpu or cuda.")


def _db(db: Optional[str]) -> str:
    return db or os.environ.get("VQSEARCH_DB") or "vqsearch-db"


def _fail(message: str) -> None:
    typer.echo(f"vqsearch: error: {message}", err=True)
    sys.exit(1)


@app.command()
def index(
    videos: list[Path] = typer.Argument(..., help="Video files to index."),
    db: Optional[str] = DbOption,
    model: Optional[str] = typer.Option(None, "--model", help="Model name [default: the index's model, else the embedded one]."),
    fps: float = typer.Option(5.0, "--fps", help="Frames sampled per second of video."),
    as_json: bool = JsonOption,
    device: str = DeviceOption,
    allow_partial: bool = typer.Option(False, "--allow-partial",
                                       help="Index the decodable part of a video cut short; the gap is recorded."),
    threads: Optional[int] = typer.Option(None, "--threads",
                                          help="CPU threads indexing uses, half each for the backbone and the detector "
                                               "[default: every core; with --ray, 1 per task]."),
    ray: bool = typer.Option(False, "--ray", help="Index on a Ray cluster, videos and segments of long ones as tasks "
                                                  "(README: Indexing on Ray)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="With --ray: the cluster [default: $RAY_ADDRESS, else a local one]."),
    segment_seconds: Optional[float] = typer.Option(None, "--segment-seconds",
                                                    help="With --ray: longer videos are cut into segments of at most "
                                                         "this long, stitched back together [default: 120]."),
    commit_every: Optional[int] = typer.Option(None, "--commit-every",
                                               help="With --ray: videos per commit to the index [default: 8; "
                                                    "at least one commit a minute]."),
) -> None:
    """Index videos: sample frames, encode regions, merge them into tracks, store them."""
    from indexer.pipeline import index_video
    from indexer.video import probe, sample_indices
    from vqsearch.models.factory import DEFAULT_MODEL, create_model, get_config
    from vqsearch.models.runtime import set_threads
    from vqsearch.store import Store

    if not (fps > 0 and math.isfinite(fps)):
        raise VQSearchError(f"--fps must be a positive number, got {fps}")
    set_threads(threads)
    if model is not None:
        get_config(model)
    settings = _ray_settings(ray, ray_address, segment_seconds, commit_every, threads)
    infos = [] if settings else [probe(path, allow_partial) for path in videos]  # checked before any work starts
    report = IndexReport(as_json, fps)
    with Store.writer(_db(db)) as store:  # writable and locked before any video work, until the end
        name = model or store.model_name or DEFAULT_MODEL
        store.check_model(name)
        if settings:
            from indexer.distributed import connected, index_on_ray

            with connected(settings.address):
                failed = index_on_ray(store, name, device, videos, fps, allow_partial, settings, report)
            if failed:
                report.done()  # what was indexed, then the error
                raise VQSearchError(f"{failed} of the {len(videos)} videos failed, each on a line above; "
                                    f"{len(videos) - failed} are indexed")
        else:
            search_model = create_model(name, device)
            for given, info in zip(videos, infos):
                with report.progress(len(sample_indices(info.frames, info.fps, fps)), given.name):
                    result = index_video(search_model, info, fps, progress=report.frames)
                store.add_video(name, str(given), result)
                report.committed(str(given), result)
    report.done()


def _ray_settings(ray: bool, address: Optional[str], segment_seconds: Optional[float], commit_every: Optional[int],
                  threads: Optional[int]) -> RaySettings | None:
    """`index --ray`'s settings (None without --ray), checked."""
    if not ray:
        if address is not None or segment_seconds is not None or commit_every is not None:
            raise VQSearchError("--ray-address, --segment-seconds and --commit-every go with --ray")
        return None
    from indexer.distributed import RaySettings

    default = RaySettings()
    settings = RaySettings(address, default.segment_seconds if segment_seconds is None else segment_seconds,
                           commit_every or default.commit_every, threads or default.threads)
    if not (settings.segment_seconds > 0 and math.isfinite(settings.segment_seconds)):
        raise VQSearchError(f"--segment-seconds must be a positive number, got {segment_seconds}")
    if settings.commit_every < 1:
        raise VQSearchError(f"--commit-every must be at least 1, got {commit_every}")
    return settings


class IndexReport:
    """What `index` tells: a progress bar on a terminal, a line per indexed video (with --json, a
    summary of them at the end), and a line per video that failed or was skipped (`--ray`)."""

    def __init__(self, as_json: bool, fps: float) -> None:
        self.as_json, self.fps = as_json, fps
        self.out = sys.stdout  # Ray's connection turns sys.stdout into stderr (`indexer.distributed.connected`)
        self.summaries: list[dict] = []
        self.skips: list[str] = []
        self._bar = None

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[None]:
        from tqdm import tqdm

        with tqdm(total=total, desc=label, unit="frame", file=sys.stderr,
                  disable=self.as_json or not sys.stderr.isatty()) as self._bar:
            yield
        self._bar = None

    def frames(self, count: int) -> None:
        self._bar.update(count)

    def _say(self, line: str, err: bool = False) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr if err else self.out)  # above the bar, when there is one

    def committed(self, given: str, result: IndexedVideo) -> None:
        info = result.info
        self.summaries.append(result.summary(given))
        if info.partial:
            self._say(f"vqsearch: {given} is incomplete: indexed the {info.frames} of its "
                      f"{info.declared_frames} frames that decode", err=True)
        if not self.as_json:
            ratio = result.patch_tokens / max(len(result.tracks), 1)
            self._say(f"{given}: {result.frames_sampled} frames -> {len(result.tracks)} tracks "
                      f"({ratio:.0f}x fewer than {result.patch_tokens} patch tokens) in {result.seconds:.1f}s")

    def failed(self, message: str) -> None:
        self._say(f"vqsearch: error: {message}", err=True)

    def skipped(self, given: str) -> None:
        self.skips.append(given)
        if not self.as_json:
            self._say(f"{given}: already indexed from this file at --fps {self.fps:g}: skipped")

    def done(self) -> None:
        if self.as_json:
            typer.echo(json.dumps({"videos": self.summaries, **({"skipped": self.skips} if self.skips else {})}))


@app.command()
def query(
    text: Optional[str] = typer.Option(None, "--text", help="What to look for, in words."),
    crop: Optional[Path] = typer.Option(None, "--crop", help="A photo or crop of the object."),
    db: Optional[str] = DbOption,
    video: Optional[Path] = typer.Option(None, "--video", help="Search only this indexed video."),
    top_k: int = typer.Option(5, "--top-k", help="How many results to list."),
    as_json: bool = JsonOption,
    show: Optional[Path] = typer.Option(None, "--show", help="Write a contact sheet of the answer to this PNG."),
    model: Optional[str] = typer.Option(None, "--model", help="Must match the index's model."),
    no_relocate: bool = typer.Option(False, "--no-relocate",
                                     help="Answer with the index's coarse track boxes: no refinement or tracking."),
    sam2_config: Optional[str] = Sam2ConfigOption,
    sam2_checkpoint: Optional[str] = Sam2CheckpointOption,
    device: str = DeviceOption,
) -> None:
    """Find where an object was last seen, by text, by crop, or both.

    The last occurrence gets a tight box on every sampled frame of it (VQ2D steps 3-5): from
    similarity maps and OpenCV's CSRT tracker, or from SAM 2 when its weights are given.
    """
    from queries.engine import QueryEngine
    from vqsearch.models.factory import create_model
    from vqsearch.store import Store

    if text is None and crop is None:
        raise VQSearchError("give --text, --crop or both")
    store = Store.open(_db(db), device=device)  # FAISS searches on a GPU when one is there
    name = store.model_name
    if name is None:
        raise VQSearchError(f"the index at {store.name} is empty: index a video first")
    if model is not None:
        store.check_model(model)
    sam2 = None
    if not no_relocate and (sam2_config or sam2_checkpoint):
        from queries.sam2_stages import SAM2Stages
        from vqsearch.models.device import resolve_device

        sam2 = SAM2Stages.from_config(sam2_config, sam2_checkpoint, str(resolve_device(device)))
    engine = QueryEngine(store, create_model(name, device))
    if no_relocate:
        answer = engine.search(text, crop, video, top_k)
    else:
        from queries.relocate import Relocation

        answer = engine.search(text, crop, video, top_k, relocate=Relocation(sam2))
    if show is not None:
        from queries.show import contact_sheet

        contact_sheet(answer, show)
    if as_json:
        typer.echo(json.dumps(answer.to_json()))
        return
    if answer.last_seen is None:
        typer.echo("Not found above the model's threshold.")
    else:
        hit = answer.last_seen
        typer.echo(f"Last seen: {hit.video}  {hit.start_time:.2f}s-{hit.end_time:.2f}s "
                   f"(frames {hit.start_frame}-{hit.end_frame})  score {hit.score:.3f}")
    typer.echo(f"{'rank':>4}  {'score':>6}  {'time':>13}  {'frames':>11}  video")
    for rank, hit in enumerate(answer.results, 1):
        typer.echo(f"{rank:>4}  {hit.score:6.3f}  {hit.start_time:6.2f}-{hit.end_time:<6.2f}  "
                   f"{hit.start_frame:>5}-{hit.end_frame:<5}  {hit.video}")
    if show is not None:
        typer.echo(f"Contact sheet: {show}")


@app.command("list")
def list_videos(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """List indexed videos."""
    from vqsearch.store import Store

    store = Store.open(_db(db), verify=False)  # reads no vectors: lists a damaged index too, for repair
    model = store.model_name
    rows = [{"video": v.path, "frames": v.frames, "fps": round(v.fps, 3), "tracks": n, "model": model,
             **({"declared_frames": v.gap.declared_frames} if v.gap else {})}
            for v, n in store.videos()]
    if as_json:
        typer.echo(json.dumps({"videos": rows}))
        return
    for row in rows:
        partial = f" (partial: {row['declared_frames']} declared)" if "declared_frames" in row else ""
        typer.echo(f"{row['video']}  {row['frames']} frames{partial} @ {row['fps']} fps  {row['tracks']} tracks  "
                   f"[{model}]")
    if not rows:
        typer.echo("No videos indexed.")


@app.command()
def remove(video: Path = typer.Argument(..., help="An indexed video."), db: Optional[str] = DbOption) -> None:
    """Remove a video's tracks and rows from the index."""
    from vqsearch.store import Store

    if not Store.open(_db(db)).remove_video(video):
        raise VQSearchError(f"video not in the index: {video}")
    typer.echo(f"Removed {video}")


@app.command()
def check(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Check that the index is sound: its database, and its FAISS files against its rows.

    Exit status 0 when it is; else 1, with one line per problem."""
    from dataclasses import asdict

    from vqsearch.store import Store

    store = Store.open(_db(db), verify=False)
    health, root = store.health(), store.name
    if as_json:
        typer.echo(json.dumps({"db": root, "sound": not health.problems, **asdict(health)}))
    else:
        for problem in health.problems:
            typer.echo(f"problem: {problem}")
        if not health.problems:
            typer.echo(f"{root}: sound: {health.videos} videos, {health.tracks} tracks, model {health.model}, "
                       f"schema {health.schema}, generation {health.generation} "
                       f"({', '.join(health.files) or 'no FAISS files'})")
        if health.orphans:
            typer.echo(f"left over by an interrupted write (the next write removes them): "
                       f"{', '.join(health.orphans)}")
    if health.problems:
        raise VQSearchError(f"the index at {root} is not sound ({len(health.problems)} problem(s)): "
                            f"`vqsearch repair --db {shlex.quote(root)}` keeps what can be kept")


@app.command()
def repair(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Make an unsound index consistent, keeping what can be kept.

    FAISS files are rebuilt from those still on disk (an older generation left by a crash); the
    videos whose vectors are in none are removed, in one atomic write, and listed to be indexed again."""
    from vqsearch.store import Store

    store = Store.open(_db(db), verify=False)
    done, root = store.repair(), store.name
    if as_json:
        report = {"db": root, "repaired": done is not None}
        if done is not None:
            report |= {"generation": done.generation, "rebuilt": done.rebuilt, "orphan_rows": done.orphan_rows,
                       "lost": [{"video": video, "tracks": tracks} for video, tracks in done.lost]}
        typer.echo(json.dumps(report))
        return
    if done is None:
        typer.echo(f"{root}: sound, nothing to repair")
        return
    for kind, sources in done.rebuilt.items():
        typer.echo(f"{kind} vectors from {', '.join(sources)}")
    if done.orphan_rows:
        typer.echo(f"removed {done.orphan_rows} rows that belonged to no row")
    for video, tracks in done.lost:
        typer.echo(f"lost: {video} ({tracks} tracks): its vectors are in no file left")
    typer.echo(f"{root}: repaired (generation {done.generation}); " + (
        f"index the lost videos again: vqsearch index {' '.join(shlex.quote(video) for video, _ in done.lost)} "
        f"--db {shlex.quote(root)}" if done.lost else "nothing lost"))


@app.command()
def serve(
    db: Optional[str] = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; one not loopback needs --token."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="VQSEARCH_TOKEN",
                                        help="Every /api/ call must carry Authorization: Bearer TOKEN."),
    device: str = DeviceOption,
) -> None:
    """Serve the search page and the JSON API (contract.md, HTTP) from one loaded engine."""
    from vqsearch.serve.app import serve as run

    run(_db(db), host, port, token or None, device)


bench = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                    help="Benchmarks: Ego4D VQ2D (run, evaluate, build DAVIS episodes); the store at scale.")
app.add_typer(bench, name="bench")

METRIC_KEYS = ("tAP", "tAP@0.25", "stAP", "stAP@0.25", "success", "recovery")


@bench.command("vq2d")
def bench_vq2d(
    annotations: Path = typer.Option(..., "--annotations", help="VQ2D annotation file (e.g. vq_val.json)."),
    clips: Path = typer.Option(..., "--clips", help="Folder of <clip_uid>.mp4 clips."),
    out: Path = typer.Option(Path("predictions.json"), "--out", help="Predictions file to write."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name [default: the embedded one]."),
    no_text: bool = typer.Option(False, "--no-text", help="Do not query with the object title."),
    no_crop: bool = typer.Option(False, "--no-crop", help="Do not query with the visual crop."),
    no_relocate: bool = typer.Option(False, "--no-relocate",
                                     help="Skip refinement, tracking and query augmentation (VQ2D steps 3-5)."),
    sam2_config: Optional[str] = Sam2ConfigOption,
    sam2_checkpoint: Optional[str] = Sam2CheckpointOption,
    as_json: bool = JsonOption,
) -> None:
    """Answer every valid VQ2D query set and write challenge-format predictions (resumable).

    Steps 3-5 use SAM 2 when its config and checkpoint are given, else similarity maps and CSRT.
    """
    from queries.vq2d.runner import run_vq2d
    from vqsearch.models.factory import DEFAULT_MODEL

    sam2 = None
    if not no_relocate:
        from queries.sam2_stages import SAM2Stages

        sam2 = SAM2Stages.from_config(sam2_config, sam2_checkpoint)
    summary = run_vq2d(annotations, clips, out, model_name=model or DEFAULT_MODEL, use_text=not no_text,
                       use_crop=not no_crop, progress=not as_json and sys.stderr.isatty(),
                       relocate=not no_relocate, sam2=sam2)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{summary['predictions']}: {summary['queries']} queries on {summary['clips']} clips "
               f"({summary['answered']} answered; {summary['clips_indexed']} clips indexed, "
               f"{summary['clips_resumed']} resumed); {summary['tracks']} tracks, "
               f"{summary['compression']:.0f}x fewer than {summary['patch_tokens']} patch tokens; "
               f"{summary['seconds']:.1f}s")


@bench.command("vq2d-eval")
def bench_vq2d_eval(
    annotations: Path = typer.Option(..., "--annotations", help="VQ2D annotation file."),
    predictions: Path = typer.Option(..., "--predictions", help="Challenge-format predictions file."),
    as_json: bool = JsonOption,
) -> None:
    """The official VQ2D metrics of a predictions file."""
    from queries.vq2d.formats import load_annotations, load_for_user, load_predictions
    from queries.vq2d.metrics import evaluate

    loaded = (load_for_user(load_annotations, annotations, "annotation"),
              load_for_user(load_predictions, predictions, "predictions"))
    try:
        metrics = evaluate(*loaded)
    except ValueError as error:
        raise VQSearchError(f"invalid predictions {predictions}: {error}") from None
    metrics = {key: metrics[key] for key in METRIC_KEYS}
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    for key in METRIC_KEYS:
        unit = " %" if key in ("success", "recovery") else ""
        typer.echo(f"{key:>10}  {metrics[key]:8.4f}{unit}")


@bench.command("scale")
def bench_scale(
    tracks: int = typer.Option(..., "--tracks", help="Synthetic tracks to store (100000, 1000000, ...)."),
    db: Path = typer.Option(..., "--db", help="A new index directory to build (an ordinary index: query it after)."),
    real: Optional[Path] = typer.Option(None, "--real", help="Index of real videos whose track tokens the synthetic "
                                        "ones are drawn around [default: $VQSEARCH_DB or ./vqsearch-db]."),
    crop: Optional[Path] = typer.Option(None, "--crop", help="The planted object's crop [default: cut from the "
                                        "longest track of --real]."),
    text: str = typer.Option("ball", "--text", help="The planted object's text query."),
    planted: int = typer.Option(12_000, "--planted", help="Sightings of the planted object (at most an eighth of "
                                "--tracks)."),
    compress_from: Optional[int] = typer.Option(None, "--compress-from", help="Tracks from which the vectors are "
                                                "stored compressed [default: the store's own threshold]."),
    warm: int = typer.Option(200, "--warm-queries", help="Warm queries timed per kind of query."),
    again: bool = typer.Option(False, "--again", help="Measure the store an earlier run built at --db again "
                               "(from the exact answers it kept beside it), without building."),
    as_json: bool = JsonOption,
) -> None:
    """Build a store of synthetic tracks drawn around real ones and measure it: disk, build time, a
    cold query's wall time and RSS, warm p50/p95, recall@10 against exact search, and "last seen"
    of an object seen more than 10,000 times against exact search."""
    from queries.scale.bench import run_scale
    from vqsearch.vector_index import COMPRESS_FROM

    figures = run_scale(db, tracks, _db(real), crop, text, planted, compress_from or COMPRESS_FROM, warm, again)
    if as_json:
        typer.echo(json.dumps(figures))
        return
    cold, warm = figures["cold_crop"], figures["warm"]
    typer.echo(f"{tracks} tracks: {figures['disk_mb']} MB on disk, built in {figures['build_s']} s; cold crop query "
               f"{cold['wall_s']} s, {cold['rss_mb']} MB RSS, last seen {'right' if cold['last_seen_correct'] else 'WRONG'}")
    typer.echo("warm p50/p95 ms (wall; CPU): " + ", ".join(
        f"{name} {w['p50_ms']}/{w['p95_ms']}; {w['cpu_p50_ms']}/{w['cpu_p95_ms']}" for name, w in warm.items()))
    typer.echo("recall@10: " + ", ".join(f"{kind} {value}" for kind, value in figures["recall_at_10"].items()))
    for name, seen in figures["last_seen"].items():
        typer.echo(f"last seen ({name}): {seen['matching']} matching tracks, "
                   f"{'right' if seen['correct'] else 'WRONG'} (track {seen['answered_track']}, "
                   f"exact {seen['expected_track']})")


@bench.command("make-davis")
def bench_make_davis(
    davis: Path = typer.Option(..., "--davis", help="DAVIS 2016 folder with JPEGImages/480p and Annotations/480p."),
    out: Path = typer.Option(..., "--out", help="Output folder (clips/ and vq_davis.json)."),
    episodes: int = typer.Option(16, "--episodes", help="How many episodes (clips) to build."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the episode plan."),
) -> None:
    """Build hard VQ2D-format episodes from DAVIS 2016 val sequences.

    Crop from the first appearance; three or four other sequences follow (one of the target's
    kind where the data has one); the target reappears for 3-6 frames before the query frame.
    """
    from queries.vq2d.davis import build_davis_episodes

    if not (davis / "JPEGImages").is_dir() or not (davis / "Annotations").is_dir():
        raise VQSearchError(f"{davis} is not a DAVIS folder (needs JPEGImages/ and Annotations/)")
    if episodes < 1:
        raise VQSearchError(f"--episodes must be at least 1, got {episodes}")
    try:
        path = build_davis_episodes(davis, out, episodes, seed, progress=sys.stderr.isatty())
    except (ValueError, OSError) as error:
        raise VQSearchError(f"cannot build DAVIS episodes: {error}") from None
    typer.echo(str(path))


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt: every `finally` runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 1; Ctrl-C exits 130,
    SIGTERM 143 (128 + the signal's number, as a shell reports it)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False)  # returns a command's exit code, 130 on Ctrl-C
    except KeyboardInterrupt:
        code = 130
    except Terminated:
        code = 143
    except VQSearchError as error:
        _fail(str(error))
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        _fail("aborted")
    except Exception as error:  # click usage errors and the like
        import click
        from sqlalchemy.exc import OperationalError

        if isinstance(error, click.ClickException):
            _fail(error.format_message())
        if isinstance(error, OperationalError):  # e.g. the server went away: the transaction rolled back
            _fail(f"the index's database failed: {' '.join(str(error.orig).split())}")
        raise
    if code in (130, 143):  # the index is as it was: every write is one atomic switch
        typer.echo(f"vqsearch: {'interrupted' if code == 130 else 'terminated'}", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
