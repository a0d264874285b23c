"""SAM 2 stages of the VQ2D pipeline (RELOCATE steps 3-4), on the real `sam2` package.

(3) a candidate region's point prompt -> SAM 2 box (`point_to_box`), then the candidate is refined
    by running SAM 2 on a context crop around it and re-encoding the refined crop (`refine`);
(4) SAM 2's video predictor tracks the candidate forward and backward through the clip until the
    object is lost (`track`).

Coordinates: every box is (x, y, width, height) with (x, y) the top-left corner, in pixels.
`point_to_box` and `refine` work in the pixels of the frame they are given; `track` takes and
returns ORIGINAL video pixels and rescales from whatever resolution the frame reader decodes at
(`original_hw`).

Without SAM 2 weights there are no SAM2Stages: `queries.relocate` runs the same steps on the
similarity maps of the query token and OpenCV's CSRT tracker instead.

Model loading: one model is built with `sam2.build_sam.build_sam2_video_predictor` (sam2's own
hydra config composition), its weights are loaded here from a LOCAL checkpoint with
`torch.load(weights_only=True)` (what sam2's `_load_checkpoint` does too, but it fails with a bare
RuntimeError), and the image predictor wraps the same model (`SAM2ImagePredictor` accepts any
SAM2Base; the video predictor's extra options only affect tracking), so the weights are in memory
once.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vqsearch.errors import VQSearchError

BoxXYWH = tuple[float, float, float, float]
# --------------------------------------------------------------------------------------------
# loading


@dataclass
class SAM2Model:
    """A SAM 2 video predictor and an image predictor sharing its weights."""

    video: Any          # sam2.sam2_video_predictor.SAM2VideoPredictor
    image: Any          # sam2.sam2_image_predictor.SAM2ImagePredictor
    config: str
    checkpoint: str | None


@contextlib.contextmanager
def _hydra_for(config: str):
    """Yield the config name to compose: a sam2 packaged config as is, or a YAML file on disk
    composed from its own directory (sam2 keeps hydra initialised on its package; restored after)."""
    path = Path(config).expanduser()
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        yield config
        return
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.resolve().parent), version_base="1.2"):
            yield path.name
    finally:
        restore_gh_from_backup(backup)


def load_sam2(config: str, checkpoint: str | os.PathLike | None, device: str = "cpu", *,
              allow_random: bool = False, overrides: Sequence[str] = ()) -> SAM2Model:
    """Build SAM 2 from a config (a sam2 config name such as "configs/sam2.1/sam2.1_hiera_t.yaml",
    or a YAML file path) and a local checkpoint (sam2's {"model": state_dict} .pt file).

    `checkpoint=None` (random weights) is refused unless `allow_random=True` (tests only).
    `overrides` are extra hydra overrides ("model.image_size=256", ...).
    """
    import sam2  # noqa: F401  (initialises hydra on sam2's packaged configs)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    if checkpoint is None and not allow_random:
        raise VQSearchError(f"no SAM 2 checkpoint given for config {config!r}: "
                            "point the configuration at a local .pt file")
    if checkpoint is not None:
        checkpoint = Path(checkpoint).expanduser()
        if not checkpoint.is_file():
            raise VQSearchError(f"SAM 2 checkpoint not found: {checkpoint} (config {config!r}); "
                                "download it once and point the configuration at the file")
    try:
        with _hydra_for(config) as name:
            model = build_sam2_video_predictor(name, ckpt_path=None, device="cpu",
                                               hydra_overrides_extra=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        cause = f" ({str(error.__cause__).splitlines()[0][:200]})" if error.__cause__ else ""
        raise VQSearchError(f"cannot build SAM 2 from config {config!r}: "
                            f"{str(error).splitlines()[0][:300]}{cause}") from None
    if checkpoint is not None:
        from vqsearch.models.checkpoints import CheckpointError, read_state_dict

        try:
            state = read_state_dict(checkpoint, "SAM 2", "sam2.1_hiera_tiny.pt", wrappers=("model",))
        except CheckpointError as error:
            raise VQSearchError(f"cannot read SAM 2 checkpoint (config {config!r}): {error}") from None
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except (RuntimeError, TypeError) as error:  # shape mismatches, not a state dict
            lines = str(error).strip().splitlines() or [type(error).__name__]
            detail = (lines[1] if len(lines) > 1 else lines[0]).strip()[:300]
            raise VQSearchError(f"SAM 2 checkpoint {checkpoint} does not fit config {config!r}: "
                                f"{detail}") from None
        if missing or unexpected:
            raise VQSearchError(
                f"SAM 2 checkpoint {checkpoint} does not fit config {config!r}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    try:
        from sam2 import _C  # noqa: F401  (sam2's optional compiled extension)
    except ImportError:
        # Without it sam2 skips hole filling anyway, but warns on every tracked frame.
        model.fill_hole_area = 0
    model = model.to(device).eval()
    image = SAM2ImagePredictor(model)
    # sam2 1.1.0 hard-codes the 1024-pixel backbone feature sizes; derive them from the model.
    size = model.image_size
    image._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    return SAM2Model(model, image, config, None if checkpoint is None else str(checkpoint))


# --------------------------------------------------------------------------------------------
# helpers


def mask_box(mask: np.ndarray) -> BoxXYWH | None:
    """Tight (x, y, w, h) around a boolean mask's pixels, or None when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return (float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0))


def scale_box(box: Sequence[float], sx: float, sy: float) -> BoxXYWH:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def clip_box(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel box inside a height x width image, at least 1 x 1."""
    x0 = min(max(int(math.floor(box[0])), 0), width - 1)
    y0 = min(max(int(math.floor(box[1])), 0), height - 1)
    x1 = min(max(int(math.ceil(box[0] + box[2])), x0 + 1), width)
    y1 = min(max(int(math.ceil(box[1] + box[3])), y0 + 1), height)
    return x0, y0, x1 - x0, y1 - y0


def read_frames(reader: Any, indices: Sequence[int]) -> np.ndarray:
    """uint8 frames [N, H, W, 3] from a decord VideoReader (anything with get_batch), a callable
    taking the index list, or a mapping frame -> image."""
    indices = [int(i) for i in indices]
    if hasattr(reader, "get_batch"):
        batch = reader.get_batch(indices)
        batch = batch.asnumpy() if hasattr(batch, "asnumpy") else (
            batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch))
    elif isinstance(reader, Mapping):
        batch = np.stack([np.asarray(reader[i]) for i in indices])
    elif callable(reader):
        batch = np.asarray(reader(indices))
    else:
        raise TypeError(f"cannot read frames from {type(reader).__name__}")
    if batch.ndim != 4 or batch.shape[0] != len(indices) or batch.shape[3] != 3:
        raise ValueError(f"frame reader returned shape {batch.shape} for {len(indices)} frames")
    return np.ascontiguousarray(batch, dtype=np.uint8)


def _l2(token: np.ndarray) -> np.ndarray:
    token = np.asarray(token, dtype=np.float32).reshape(-1)
    return token / max(float(np.linalg.norm(token)), 1e-8)


@contextlib.contextmanager
def _quiet_sam2():
    """sam2's frame loading and propagation draw tqdm bars on stderr; silence them here only."""
    import functools

    import sam2.sam2_video_predictor as vp
    import sam2.utils.misc as misc
    from tqdm import tqdm

    saved = vp.tqdm, misc.tqdm
    vp.tqdm = misc.tqdm = functools.partial(tqdm, disable=True)
    try:
        yield
    finally:
        vp.tqdm, misc.tqdm = saved


# --------------------------------------------------------------------------------------------
# the stages


class SAM2Stages:
    """SAM 2 point-to-box, refinement and tracking on one loaded model."""

    def __init__(self, model: SAM2Model, *, context: float = 0.5, min_context: int = 64,
                 score_threshold: float = 0.0, min_mask_pixels: int = 4, chunk_frames: int = 32,
                 jpeg_quality: int = 95) -> None:
        """`context`: margin added on each side of a box for the refinement crop, as a fraction of
        the box side (0.5 -> a crop twice the box), at least `min_context` pixels wide/high.
        Tracking stops in a direction at the first frame whose object score logit is below
        `score_threshold` or whose mask has fewer than `min_mask_pixels` pixels. At most
        `chunk_frames` frames are decoded and held by SAM 2 at a time; longer clips are tracked in
        chunks, each seeded with the previous chunk's last mask."""
        if chunk_frames < 2:
            raise ValueError("chunk_frames must be at least 2")
        self.model = model
        self.context, self.min_context = context, min_context
        self.score_threshold, self.min_mask_pixels = score_threshold, min_mask_pixels
        self.chunk_frames, self.jpeg_quality = chunk_frames, jpeg_quality
        self._image_key: bytes | None = None

    @classmethod
    def from_config(cls, config: str | None, checkpoint: str | None, device: str = "cpu",
                    **kwargs) -> SAM2Stages | None:
        """SAM 2 stages when weights are configured, else None (config or checkpoint None); a
        configured checkpoint that is missing is an error, not a reason to go without."""
        if config is None and checkpoint is not None:
            raise VQSearchError(f"SAM 2 checkpoint {checkpoint} given without a SAM 2 config "
                                "(e.g. configs/sam2.1/sam2.1_hiera_t.yaml)")
        if config is None or checkpoint is None:
            return None
        return cls(load_sam2(config, checkpoint, device), **kwargs)

    # ---- step 3: point -> box

    def _set_image(self, image: np.ndarray) -> None:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(str(image.shape).encode())
        key = digest.digest()
        if key != self._image_key:
            import torch

            with torch.inference_mode():
                self.model.image.set_image(image)
            self._image_key = key

    def point_to_box(self, frame_rgb: np.ndarray, point_xy: Sequence[float]) -> BoxXYWH | None:
        """SAM 2's best mask for one positive point -> its tight box (frame pixels); None when
        every mask is empty."""
        import torch

        self._set_image(frame_rgb)
        with torch.inference_mode():
            masks, scores, _ = self.model.image.predict(
                point_coords=np.asarray([point_xy], dtype=np.float32),
                point_labels=np.asarray([1], dtype=np.int32), multimask_output=True)
        for i in np.argsort(-scores, kind="stable"):
            box = mask_box(masks[i] > 0)
            if box is not None:
                return box
        return None

    # ---- step 3: refinement

    def context_crop(self, box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
        """The (x, y, w, h) crop around a box with the context margin, inside the frame."""
        w, h = max(box[2], 1.0), max(box[3], 1.0)
        cw = max(w * (1 + 2 * self.context), self.min_context)
        ch = max(h * (1 + 2 * self.context), self.min_context)
        cx, cy = box[0] + w / 2, box[1] + h / 2
        return clip_box((cx - cw / 2, cy - ch / 2, cw, ch), height, width)

    def refine(self, frame_rgb: np.ndarray, box: Sequence[float],
               encode_crop: Callable[[np.ndarray], np.ndarray]) -> tuple[BoxXYWH, np.ndarray]:
        """Run SAM 2 with the box prompt on a context crop around it (a zoom on small objects),
        take the tight box of the mask (back in frame pixels; the input box if the mask is empty),
        and re-encode the refined box's crop with `encode_crop` (e.g. QueryEngine.encode_crop),
        returning (refined box, unit token)."""
        import torch

        height, width = frame_rgb.shape[:2]
        refined: BoxXYWH = tuple(float(v) for v in box)
        cx, cy, cw, ch = self.context_crop(box, height, width)
        self._set_image(frame_rgb[cy:cy + ch, cx:cx + cw])
        prompt = np.asarray([box[0] - cx, box[1] - cy, box[0] - cx + box[2], box[1] - cy + box[3]],
                            dtype=np.float32)
        with torch.inference_mode():
            masks, _, _ = self.model.image.predict(box=prompt, multimask_output=False)
        found = mask_box(masks[0] > 0)
        if found is not None:
            refined = (found[0] + cx, found[1] + cy, found[2], found[3])
        x, y, w, h = clip_box(refined, height, width)
        token = _l2(encode_crop(np.ascontiguousarray(frame_rgb[y:y + h, x:x + w])))
        return (float(x), float(y), float(w), float(h)), token

    # ---- step 4: tracking

    def track(self, frames_reader: Any, start_frame: int, box: Sequence[float],
              frame_indices: Sequence[int], original_hw: tuple[int, int] | None = None
              ) -> dict[int, BoxXYWH]:
        """Response track {frame: (x, y, w, h)} in original pixels, sorted by frame.

        `frame_indices` are the clip's frame numbers (the frames `frames_reader` is asked for),
        `start_frame` one of them, `box` the candidate box there in original pixels, and
        `original_hw` the original (height, width) when the reader decodes resized frames.
        SAM 2 is prompted with the box at `start_frame` and propagated forward and backward
        through `frame_indices` until the object is lost; the start frame is always in the
        answer (the given box if SAM 2 loses the object at once).
        """
        indices = sorted({int(i) for i in frame_indices})
        start_frame = int(start_frame)
        if start_frame not in indices:
            raise ValueError(f"start frame {start_frame} is not among the clip's frames")
        box = tuple(float(v) for v in box)
        at = indices.index(start_frame)
        result = {}
        result.update(self._track_one_way(frames_reader, indices[at:], box, original_hw, reverse=False))
        result.update(self._track_one_way(frames_reader, indices[:at + 1][::-1], box, original_hw,
                                          reverse=True))
        result.setdefault(start_frame, box)
        return dict(sorted(result.items()))

    def _track_one_way(self, reader: Any, order: list[int], box: BoxXYWH,
                       original_hw: tuple[int, int] | None, reverse: bool) -> dict[int, BoxXYWH]:
        """Track from order[0] along `order` (frame numbers in processing order), in chunks."""
        if len(order) < 2:
            return {}
        import torch
        from PIL import Image

        predictor = self.model.video
        found: dict[int, BoxXYWH] = {}
        prompt_mask: np.ndarray | None = None
        pos = 0
        while True:
            chunk = order[pos:pos + self.chunk_frames]
            chrono = sorted(chunk)
            frames = read_frames(reader, chrono)
            fh, fw = frames.shape[1:3]
            oh, ow = original_hw if original_hw is not None else (fh, fw)
            sx, sy = ow / fw, oh / fh
            anchor = chrono.index(chunk[0])
            lost = False
            with tempfile.TemporaryDirectory(prefix="vqsearch-sam2-") as folder, _quiet_sam2(), \
                    torch.inference_mode():
                for j, frame in enumerate(frames):  # sam2 reads "<index>.jpg" folders
                    Image.fromarray(frame).save(os.path.join(folder, f"{j}.jpg"),
                                                quality=self.jpeg_quality)
                del frames
                offload = predictor.device.type != "cpu"
                state = predictor.init_state(folder, offload_video_to_cpu=True,
                                             offload_state_to_cpu=offload)
                if prompt_mask is None:
                    x, y, w, h = scale_box(box, 1 / sx, 1 / sy)
                    predictor.add_new_points_or_box(state, frame_idx=anchor, obj_id=1,
                                                    box=np.asarray([x, y, x + w, y + h], np.float32))
                else:
                    predictor.add_new_mask(state, frame_idx=anchor, obj_id=1,
                                           mask=torch.from_numpy(prompt_mask))
                outputs = state["output_dict_per_obj"]
                for local, _, masks in predictor.propagate_in_video(
                        state, start_frame_idx=anchor, reverse=reverse):
                    mask = (masks[0, 0] > 0).cpu().numpy()
                    out = (outputs[0]["cond_frame_outputs"].get(local)
                           or outputs[0]["non_cond_frame_outputs"].get(local))
                    score = float(out["object_score_logits"].max()) if out is not None else math.inf
                    if score < self.score_threshold or mask.sum() < self.min_mask_pixels:
                        lost = True
                        break
                    found[chrono[local]] = scale_box(mask_box(mask), sx, sy)
                    prompt_mask = mask
                del state
            pos += len(chunk) - 1  # the next chunk starts on this chunk's last frame, seeded with its mask
            if lost or pos >= len(order) - 1:
                return found
