"""Synthetic media for tests and ``egofeat demo``: coded videos, JPEG folders, a tiny dataset.

- :func:`write_video` / :func:`write_jpeg_folder` draw each frame's index into its pixels as a
  4x4 grid of big two-colour blocks (16 bits), which survives lossy coding and resizing;
  :func:`read_frame_index` reads it back, so a test can check which frame a decoder returned.
- :func:`write_detections_pickle` writes EPIC-style hand-object pickles with a proto3 encoder
  of the ``Detections`` schema (the inverse of :mod:`egofeat.extract.boxes`).
- :func:`write_synthetic_dataset` writes a small EPIC-KITCHENS-shaped dataset whose pixels
  depend on the labels: a coloured object whose shape and colour encode the noun moves as
  the verb says, held by a skin-coloured "hand". Features of it are learnable in seconds.
"""

from __future__ import annotations

import csv
import math
import pickle
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from egofeat.extract.detections import (
    BBox,
    FrameDetections,
    HandDetection,
    HandSide,
    HandState,
    ObjectDetection,
)
from egofeat.sources.epic100 import EPIC_COLUMNS
from egofeat.sources.epic_frames import epic_jpeg_fps

__all__ = [
    "SYNTHETIC_NOUNS",
    "SYNTHETIC_VERBS",
    "SyntheticDataset",
    "draw_frame_index",
    "encode_detections",
    "encode_video",
    "read_frame_index",
    "scene_frames",
    "write_detections_pickle",
    "write_jpeg_folder",
    "write_scene_video",
    "write_synthetic_dataset",
    "write_video",
]

# ---------------------------------------------------------------------------------------------
# frame-index codes
# ---------------------------------------------------------------------------------------------

_CODE_GRID = (4, 4)  # rows, columns: 16 bits, frames 0..65535
_BIT_ON = np.array([224, 224, 32], np.uint8)  # yellow: R and G high, B low (shows RGB order)
_BIT_OFF = np.array([32, 32, 32], np.uint8)


def draw_frame_index(index: int, size: tuple[int, int]) -> np.ndarray:
    """An ``(H, W, 3)`` RGB frame showing ``index`` as a 4x4 grid of on/off blocks.

    Bit ``k`` (least significant first) is block ``k`` in row-major order.
    """
    rows, cols = _CODE_GRID
    if not 0 <= index < 2 ** (rows * cols):
        raise ValueError(f"frame index {index} does not fit the {rows * cols}-bit code")
    width, height = size
    frame = np.empty((height, width, 3), np.uint8)
    for bit in range(rows * cols):
        r, c = divmod(bit, cols)
        y0, y1 = r * height // rows, (r + 1) * height // rows
        x0, x1 = c * width // cols, (c + 1) * width // cols
        frame[y0:y1, x0:x1] = _BIT_ON if (index >> bit) & 1 else _BIT_OFF
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """The index :func:`draw_frame_index` drew into ``frame`` (any size, after lossy coding)."""
    rows, cols = _CODE_GRID
    height, width = frame.shape[:2]
    threshold = (_BIT_ON.mean() + _BIT_OFF.mean()) / 2
    index = 0
    for bit in range(rows * cols):
        r, c = divmod(bit, cols)
        # Read the middle half of each block, away from edges blurred by coding.
        y0, y1 = (4 * r + 1) * height // (4 * rows), (4 * r + 3) * height // (4 * rows)
        x0, x1 = (4 * c + 1) * width // (4 * cols), (4 * c + 3) * width // (4 * cols)
        if frame[y0:y1, x0:x1].mean() > threshold:
            index |= 1 << bit
    return index


# ---------------------------------------------------------------------------------------------
# video and JPEG writers
# ---------------------------------------------------------------------------------------------

_X264_OPTIONS = {"crf": "18", "preset": "veryfast"}
_VFR_TIME_BASE = Fraction(1, 1000)


def encode_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    pts: Sequence[float] | None = None,
    codec: str = "libx264",
    gop: int | None = None,
    options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> Path:
    """Encode RGB ``(H, W, 3)`` uint8 frames to ``path`` (container chosen by extension).

    ``pts`` gives each frame's presentation time in seconds (strictly increasing, millisecond
    precision) for a variable-frame-rate file; ``fps`` is then only the nominal rate.
    ``gop`` is the keyframe interval in frames. ``options`` are codec options (libx264
    defaults to ``crf=18, preset=veryfast``, which keeps B-frames); ``container_options`` are
    muxer options (e.g. ``{"movflags": "faststart"}`` puts the MP4 index first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if pts is not None:
        ticks = np.round(np.asarray(pts, dtype=np.float64) / float(_VFR_TIME_BASE))
        if (np.diff(ticks) <= 0).any() or (ticks < 0).any():
            raise ValueError("pts must be non-negative and strictly increasing (1 ms apart)")
    container = av.open(
        str(path),
        "w",
        format="mp4" if path.suffix.lower() == ".mp4" else None,
        options=dict(container_options or {}),
    )
    try:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        stream.options = dict(options if options is not None else _default_options(codec))
        if gop is not None:
            stream.codec_context.gop_size = gop
        if pts is not None:
            stream.time_base = _VFR_TIME_BASE
            stream.codec_context.time_base = _VFR_TIME_BASE
        for i, image in enumerate(frames):
            if i == 0:
                stream.height, stream.width = image.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if pts is not None:
                if i >= len(ticks):
                    raise ValueError(f"more frames than pts values ({len(ticks)})")
                frame.pts, frame.time_base = int(ticks[i]), _VFR_TIME_BASE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    finally:
        container.close()
    return path


def _default_options(codec: str) -> dict[str, str]:
    return dict(_X264_OPTIONS) if codec == "libx264" else {}


def write_video(
    path: str | Path,
    n_frames: int,
    fps: float,
    size: tuple[int, int] = (64, 48),
    *,
    pts: Sequence[float] | None = None,
    codec: str = "libx264",
    gop: int | None = None,
) -> Path:
    """A video of ``n_frames`` whose frame ``i`` shows ``i`` (see :func:`read_frame_index`).

    ``size`` is ``(width, height)`` (even numbers for yuv420p); ``pts`` makes it variable
    frame rate; ``gop`` sets the keyframe interval.
    """
    frames = (draw_frame_index(i, size) for i in range(n_frames))
    return encode_video(path, frames, fps, pts=pts, codec=codec, gop=gop)


def scene_frames(n_frames: int, fps: float, size: tuple[int, int] = (456, 256),
                 seed: int = 0) -> Iterator[np.ndarray]:
    """Frames of an EPIC-like scene: a textured worktop panning under a wandering head-mounted
    camera, with an object moving across it. Codes like real footage (motion, texture), unlike
    the flat blocks of :func:`draw_frame_index`, so decoding costs what real video costs."""
    rng = np.random.default_rng(seed)
    width, height = size
    # A smooth random texture twice as wide as the frame, so the pan never wraps visibly.
    coarse = rng.uniform(40, 215, size=(height // 8 + 1, width // 4 + 1, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1)))[:height, : 2 * width]
    texture = np.clip(texture + rng.normal(0, 6, texture.shape), 0, 255).astype(np.uint8)
    radius = max(4, height // 9)
    for i in range(n_frames):
        t = i / fps
        shift = int(width * 0.04 * math.sin(t / 1.5) + t * width / 12) % width
        frame = texture[:, shift : shift + width].copy()
        cx = int(width / 2 + width / 3 * math.sin(t / 0.7))
        cy = int(height / 2 + height / 4 * math.cos(t / 0.9))
        frame[max(0, cy - radius) : cy + radius, max(0, cx - radius) : cx + radius] = (200, 40, 40)
        yield frame


def write_scene_video(
    path: str | Path,
    seconds: float,
    fps: float,
    size: tuple[int, int] = (456, 256),
    *,
    gop_sec: float = 1.0,
    vfr: bool = False,
    seed: int = 0,
    options: Mapping[str, str] | None = None,
) -> Path:
    """An H.264 video of :func:`scene_frames`: EPIC-like footage for benchmarks.

    ``gop_sec`` is the keyframe interval in seconds (GoPro-style 0.5 s or 1 s); ``vfr`` spaces
    frames irregularly (intervals cycling through 1, 1, 2, 1, 1.5 frame periods, as phones
    record), ``fps`` then being the nominal rate. ``options`` are libx264 options (default
    ``crf=23, preset=veryfast``).
    """
    n_frames = max(1, round(seconds * fps))
    pts = None
    if vfr:
        steps = np.resize([1.0, 1.0, 2.0, 1.0, 1.5], n_frames - 1) / fps
        pts = np.concatenate([[0.0], np.cumsum(steps)]).round(3)
        n_frames = int(np.searchsorted(pts, seconds, side="left")) or 1
        pts = pts[:n_frames]
    return encode_video(
        path, scene_frames(n_frames, fps, size, seed), fps, pts=pts,
        gop=max(1, round(gop_sec * fps)),
        options=dict(options or {"crf": "23", "preset": "veryfast"}),
    )


def write_jpeg_folder(
    folder: str | Path, n_frames: int, size: tuple[int, int] = (64, 48), *, quality: int = 95
) -> Path:
    """EPIC-style ``frame_%010d.jpg`` files numbered from 1, file ``n`` showing index ``n``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(1, n_frames + 1):
        image = Image.fromarray(draw_frame_index(number, size))
        image.save(folder / f"frame_{number:010d}.jpg", quality=quality)
    return folder


# ---------------------------------------------------------------------------------------------
# hand-object detections writer (proto3 encoder)
# ---------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int32/enums go out sign-extended to 64 bits
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


_FLOAT32 = struct.Struct("<f")


def _float_field(number: int, value: float) -> bytes:
    # proto3 leaves fields at their default value (0) off the wire.
    return _tag(number, 5) + _FLOAT32.pack(value) if value else b""


def _varint_field(number: int, value: int) -> bytes:
    return _tag(number, 0) + _varint(int(value)) if value else b""


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _encode_bbox(box: BBox) -> bytes:
    return b"".join(_float_field(i + 1, v) for i, v in enumerate(box.as_tuple()))


def encode_detections(detections: FrameDetections) -> bytes:
    """Serialize one frame's detections as a ``model.detections.Detections`` message."""
    parts = [
        _bytes_field(1, detections.video_id.encode()) if detections.video_id else b"",
        _varint_field(2, detections.frame_number),
    ]
    for hand in detections.hands:
        offset = _float_field(1, hand.object_offset[0]) + _float_field(2, hand.object_offset[1])
        parts.append(
            _bytes_field(
                3,
                _bytes_field(1, _encode_bbox(hand.bbox))
                + _float_field(2, hand.score)
                + _varint_field(3, hand.state)
                + _bytes_field(4, offset)
                + _varint_field(5, hand.side),
            )
        )
    for obj in detections.objects:
        parts.append(
            _bytes_field(4, _bytes_field(1, _encode_bbox(obj.bbox)) + _float_field(2, obj.score))
        )
    return b"".join(parts)


def write_detections_pickle(path: str | Path, frames: Sequence[FrameDetections]) -> Path:
    """An EPIC hand-object pickle: a list of serialized messages, element ``i`` = frame ``i+1``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump([encode_detections(frame) for frame in frames], file, protocol=4)
    return path


# ---------------------------------------------------------------------------------------------
# the synthetic dataset
# ---------------------------------------------------------------------------------------------

SYNTHETIC_VERBS: tuple[str, ...] = ("take", "put", "open", "close", "wash")
SYNTHETIC_NOUNS: tuple[str, ...] = ("plate", "cup", "knife", "pan", "bowl", "spoon")

# noun -> (RGB colour, shape); verb -> displacement (dx, dy) in frame units at progress p.
_NOUN_LOOKS: dict[str, tuple[tuple[int, int, int], str]] = {
    "plate": ((250, 250, 250), "circle"),
    "cup": ((200, 30, 30), "square"),
    "knife": ((40, 60, 220), "hbar"),
    "pan": ((30, 30, 30), "ring"),
    "bowl": ((40, 170, 60), "triangle"),
    "spoon": ((230, 140, 20), "vbar"),
}
_VERB_MOTIONS = {
    "take": lambda p: (0.0, -0.35 * p),
    "put": lambda p: (0.0, 0.35 * p),
    "open": lambda p: (0.3 * p, 0.0),
    "close": lambda p: (-0.3 * p, 0.0),
    "wash": lambda p: (0.1 * math.sin(6 * math.pi * p), 0.0),
}
_SKIN = (225, 170, 135)
_TRAIN, _VALIDATION = "EPIC_100_train.csv", "EPIC_100_validation.csv"


@dataclass(frozen=True)
class SyntheticDataset:
    """Where :func:`write_synthetic_dataset` put things.

    ``videos_root`` follows the EPIC download layout: ``{videos_root}/{participant}/videos/
    {video}.MP4`` and ``{videos_root}/{participant}/hand-objects/{video}.pkl``;
    ``annotations_dir`` holds ``EPIC_100_{train,validation}.csv``,
    ``EPIC_100_{verb,noun}_classes.csv`` and ``EPIC_100_video_info.csv``.
    """

    root: Path
    annotations_dir: Path
    videos_root: Path
    video_ids: tuple[str, ...]
    validation_video_ids: tuple[str, ...]
    verbs: tuple[str, ...]
    nouns: tuple[str, ...]
    n_segments: int


@dataclass(frozen=True)
class _Segment:
    video_id: str
    index: int
    start: float
    end: float
    verb: int
    noun: int
    origin: tuple[float, float]


def write_synthetic_dataset(
    root: str | Path,
    *,
    n_videos: int = 6,
    segments_per_video: int = 25,
    fps: float = 15.0,
    size: tuple[int, int] = (160, 90),
    seed: int = 0,
) -> SyntheticDataset:
    """Write a small EPIC-KITCHENS-shaped dataset under ``root`` (see :class:`SyntheticDataset`).

    Videos ``P01_01, P01_02, P02_01, …`` (the last one an extension-style ``PXX_101`` id, so
    the 50 fps frame-number rule is exercised) hold back-to-back actions of 1–2 s; every third
    video is a validation video. Annotation frame numbers follow the EPIC rule (60/50 fps),
    timestamps are exact to 10 ms, and hand-object pickles carry one ``Detections`` per
    EPIC frame: the hand (in contact during actions), its object, a low-score decoy hand and
    a confident decoy object far away. Deterministic for a given ``seed``.
    """
    if n_videos < 2 or segments_per_video < 1:
        raise ValueError("need n_videos >= 2 and segments_per_video >= 1")
    root = Path(root)
    rng = np.random.default_rng(seed)
    video_ids = _synthetic_video_ids(n_videos)
    validation = tuple(v for i, v in enumerate(video_ids) if i % 3 == 2)
    videos_root, annotations_dir = root, root / "annotations"
    rows: dict[str, list[list[object]]] = {_TRAIN: [], _VALIDATION: []}
    info = []
    for video_id in video_ids:
        segments, duration = _timeline(video_id, segments_per_video, rng)
        participant = video_id.split("_")[0]
        background = _background(size, rng)
        frames = (
            _render(background, _state_at(i / fps, segments), size)
            for i in range(math.ceil(duration * fps))
        )
        encode_video(
            videos_root / participant / "videos" / f"{video_id}.MP4",
            frames,
            fps,
            options={"crf": "20", "preset": "ultrafast"},
        )
        write_detections_pickle(
            videos_root / participant / "hand-objects" / f"{video_id}.pkl",
            _detections(video_id, segments, duration, size),
        )
        split = _VALIDATION if video_id in validation else _TRAIN
        rows[split] += [_annotation_row(segment) for segment in segments]
        info.append([video_id, f"{duration:.6f}", f"{fps}", f"{size[0]}x{size[1]}"])
    _write_annotations(annotations_dir, rows, info)
    return SyntheticDataset(
        root=root,
        annotations_dir=annotations_dir,
        videos_root=videos_root,
        video_ids=video_ids,
        validation_video_ids=validation,
        verbs=SYNTHETIC_VERBS,
        nouns=SYNTHETIC_NOUNS,
        n_segments=n_videos * segments_per_video,
    )


def _synthetic_video_ids(n_videos: int) -> tuple[str, ...]:
    ids = [f"P{i // 2 + 1:02d}_{i % 2 + 1:02d}" for i in range(n_videos - 1)]
    last_participant = (n_videos - 1) // 2 + 1
    return (*ids, f"P{last_participant:02d}_101")


def _timeline(video_id: str, count: int, rng: np.random.Generator) -> tuple[list[_Segment], float]:
    segments, t = [], 0.5
    for index in range(count):
        length = round(float(rng.uniform(1.0, 2.0)), 2)
        verb = int(rng.integers(len(SYNTHETIC_VERBS)))
        noun = int(rng.integers(len(SYNTHETIC_NOUNS)))
        dx, dy = _VERB_MOTIONS[SYNTHETIC_VERBS[verb]](1.0)
        # Start so that the whole motion stays inside the frame.
        origin = (
            0.5 - dx / 2 + float(rng.uniform(-0.08, 0.08)),
            0.5 - dy / 2 + float(rng.uniform(-0.05, 0.05)),
        )
        t = round(t, 2)
        segments.append(_Segment(video_id, index, t, round(t + length, 2), verb, noun, origin))
        t += length + float(rng.uniform(0.3, 0.6))
    return segments, round(t + 0.5, 2)


@dataclass(frozen=True)
class _Scene:
    """What is on screen at one instant, in frame units (0..1)."""

    object_center: tuple[float, float] | None
    noun: int
    hand_center: tuple[float, float]
    in_contact: bool


_OBJECT_RADIUS = 0.13  # of the frame height
_HAND_RADII = (0.07, 0.14)  # (x of width, y of height)
_HAND_REST = (0.85, 0.85)


def _state_at(t: float, segments: Sequence[_Segment]) -> _Scene:
    for segment in segments:
        if segment.start <= t <= segment.end:
            progress = (t - segment.start) / max(segment.end - segment.start, 1e-9)
            dx, dy = _VERB_MOTIONS[SYNTHETIC_VERBS[segment.verb]](progress)
            cx, cy = segment.origin[0] + dx, segment.origin[1] + dy
            # The hand grips the object from below-right.
            return _Scene((cx, cy), segment.noun, (cx + 0.08, cy + 0.16), True)
    return _Scene(None, -1, _HAND_REST, False)


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    width, height = size
    tint = rng.uniform(150, 200, size=3)
    ramp = np.linspace(-20, 20, height)[:, None, None]
    texture = rng.normal(0, 6, size=(height, width, 1))
    return np.clip(tint + ramp + texture, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, radius: float) -> np.ndarray:
    ax, ay = np.abs(xx), np.abs(yy)
    distance = np.hypot(xx, yy)
    if shape == "circle":
        return distance <= radius
    if shape == "ring":
        return (distance <= radius) & (distance >= radius * 0.55)
    if shape == "square":
        return (ax <= radius * 0.85) & (ay <= radius * 0.85)
    if shape == "hbar":
        return (ax <= radius * 1.6) & (ay <= radius * 0.4)
    if shape == "vbar":
        return (ax <= radius * 0.4) & (ay <= radius * 1.3)
    # triangle, apex up
    return (yy >= -radius) & (yy <= radius) & (ax <= (yy + radius) / 2)


def _shape_extent(shape: str, radius: float) -> tuple[float, float]:
    """Half width and half height of a shape's mask, in pixels."""
    return {
        "square": (radius * 0.85, radius * 0.85),
        "hbar": (radius * 1.6, radius * 0.4),
        "vbar": (radius * 0.4, radius * 1.3),
        "triangle": (radius, radius),
    }.get(shape, (radius, radius))


def _render(background: np.ndarray, scene: _Scene, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    frame = background.copy()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if scene.object_center is not None:
        colour, shape = _NOUN_LOOKS[SYNTHETIC_NOUNS[scene.noun]]
        cx, cy = scene.object_center[0] * width, scene.object_center[1] * height
        frame[_shape_mask(shape, xx - cx, yy - cy, _OBJECT_RADIUS * height)] = colour
    hx, hy = scene.hand_center[0] * width, scene.hand_center[1] * height
    rx, ry = _HAND_RADII[0] * width, _HAND_RADII[1] * height
    frame[((xx - hx) / rx) ** 2 + ((yy - hy) / ry) ** 2 <= 1] = _SKIN
    return frame


def _detections(
    video_id: str, segments: Sequence[_Segment], duration: float, size: tuple[int, int]
) -> list[FrameDetections]:
    width, height = size
    rate = epic_jpeg_fps(video_id)
    decoy_hand = HandDetection(
        BBox(0.05, 0.6, 0.15, 0.8), 0.2, HandState.NO_CONTACT, (0.0, 0.0), HandSide.LEFT
    )
    decoy_object = ObjectDetection(BBox(0.02, 0.02, 0.12, 0.12), 0.6)
    frames = []
    for number in range(1, math.floor(duration * rate) + 1):
        scene = _state_at(number / rate, segments)
        hx, hy = scene.hand_center
        hand_box = BBox(
            hx - _HAND_RADII[0], hy - _HAND_RADII[1], hx + _HAND_RADII[0], hy + _HAND_RADII[1]
        )
        objects = [decoy_object]
        offset = (0.0, 0.0)
        if scene.object_center is not None:
            cx, cy = scene.object_center
            half_w, half_h = _shape_extent(
                _NOUN_LOOKS[SYNTHETIC_NOUNS[scene.noun]][1], _OBJECT_RADIUS * height
            )
            objects.append(
                ObjectDetection(
                    BBox(
                        cx - half_w / width,
                        cy - half_h / height,
                        cx + half_w / width,
                        cy + half_h / height,
                    ),
                    0.9,
                )
            )
            offset = (cx - hx, cy - hy)
        state = HandState.PORTABLE_OBJECT if scene.in_contact else HandState.NO_CONTACT
        hand = HandDetection(hand_box.clamped(), 0.95, state, offset, HandSide.RIGHT)
        frames.append(
            FrameDetections(
                video_id,
                number,
                (hand, decoy_hand),
                tuple(ObjectDetection(o.bbox.clamped(), o.score) for o in objects),
            )
        )
    return frames


def _annotation_row(segment: _Segment) -> list[object]:
    rate = epic_jpeg_fps(segment.video_id)
    verb, noun = SYNTHETIC_VERBS[segment.verb], SYNTHETIC_NOUNS[segment.noun]
    return [
        f"{segment.video_id}_{segment.index}",
        segment.video_id.split("_")[0],
        segment.video_id,
        _timestamp(segment.start + 0.1, 3),
        _timestamp(segment.start, 2),
        _timestamp(segment.end, 2),
        max(1, math.floor(segment.start * rate + 1e-6)),
        math.floor(segment.end * rate + 1e-6),
        f"{verb} {noun}",
        verb,
        segment.verb,
        noun,
        segment.noun,
        f"['{noun}']",
        f"[{segment.noun}]",
    ]


def _timestamp(seconds: float, decimals: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:0{3 + decimals}.{decimals}f}"


def _write_annotations(
    folder: Path, rows: Mapping[str, list[list[object]]], info: list[list[str]]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in rows.items():
        _write_csv(folder / name, EPIC_COLUMNS, table)
    for name, keys in (("verb", SYNTHETIC_VERBS), ("noun", SYNTHETIC_NOUNS)):
        _write_csv(
            folder / f"EPIC_100_{name}_classes.csv",
            ("id", "key", "instances", "category"),
            [[i, key, f"['{key}']", "synthetic"] for i, key in enumerate(keys)],
        )
    _write_csv(
        folder / "EPIC_100_video_info.csv", ("video_id", "duration", "fps", "resolution"), info
    )


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
