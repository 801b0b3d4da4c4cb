"""The EPIC-KITCHENS JPEG frame rule: seconds <-> released RGB frame numbers.

EPIC-KITCHENS releases RGB frames as ``frame_%010d.jpg`` files numbered from 1, extracted
at 60 fps for EPIC-55 videos (``PXX_YY``) and at 50 fps for the EPIC-100 extension videos
(``PXX_1YY``, a 3-digit video number), whatever the video's native frame rate. The
annotation ``start_frame``/``stop_frame`` columns are ``max(1, floor(t * fps))`` with ``t`` the
timestamp in seconds as a float64 and that product taken in float64 too: computed this way
they match every start and stop frame of ``EPIC_100_validation.csv``.

Frame ``k`` therefore stands for the annotation times ``[t_k, t_{k+1})`` with ``t_k`` the
earliest float64 for which ``floor(t_k * fps) == k`` (``k / fps`` to within an ulp or two);
frame 1 also stands for ``[0, t_1)``. :func:`epic_frame_time` returns ``t_k``, so the round
trip ``epic_frame_at(epic_frame_time(k, v), v) == k`` is exact for every ``k >= 1``.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

_VIDEO_ID = re.compile(r"^P\d{2,}_(\d{2,3})$")
EPIC55_JPEG_FPS = 60
EXTENSION_JPEG_FPS = 50


def epic_jpeg_fps(video_id: str) -> int:
    """Frame rate of the released RGB JPEGs of ``video_id``: 60 (``P01_11``) or 50 (``P01_101``)."""
    match = _VIDEO_ID.match(video_id)
    if match is None:
        raise ValueError(
            f"{video_id!r} is not an EPIC-KITCHENS video id: expected PXX_YY (EPIC-55, "
            "60 fps JPEGs) or PXX_1YY (extension, 50 fps JPEGs)"
        )
    return EXTENSION_JPEG_FPS if len(match.group(1)) == 3 else EPIC55_JPEG_FPS


def epic_frame_at(t_sec: float, video_id: str) -> int:
    """1-based JPEG frame number shown at ``t_sec`` seconds: ``max(1, floor(t_sec * fps))``."""
    return int(epic_frames_at(np.asarray([t_sec], dtype=np.float64), video_id)[0])


def epic_frame_time(frame: int, video_id: str) -> float:
    """Start time ``t_k`` (seconds) of JPEG frame ``frame`` (``>= 1``): the earliest float
    with ``floor(t_k * fps) == frame``, i.e. ``frame / fps`` to within an ulp or two.

    ``epic_frame_at(epic_frame_time(k, v), v) == k`` exactly; frame 1 also covers
    ``[0, 1 / fps)``, where the rule is clamped.
    """
    return float(epic_frame_times(np.asarray([frame], dtype=np.int64), video_id)[0])


def epic_frames_at(t_sec: npt.ArrayLike, video_id: str | npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Vectorised :func:`epic_frame_at`: one video id, or one per time."""
    times = np.asarray(t_sec, dtype=np.float64)
    return np.asarray(jpeg_frame_number(times, _fps_array(video_id, times.shape)), dtype=np.int64)


def jpeg_frame_number(t_sec: float | npt.ArrayLike, fps: float | npt.ArrayLike) -> int | npt.NDArray[np.int64]:
    """1-based frame number shown at ``t_sec`` in frames extracted at ``fps``: ``max(1,
    floor(t * fps))``, the product a plain float64 floor as in the EPIC annotations (a time like
    67.1 s, whose product is 4025.99999..., is frame 4025), so times meant to land in a frame
    should point inside it, e.g. at its centre ``(n + 0.5) / fps``."""
    number = np.maximum(1, np.floor(np.asarray(t_sec, dtype=np.float64) * np.asarray(fps, dtype=np.float64)))
    number = number.astype(np.int64)
    return int(number) if number.ndim == 0 else number


def epic_frame_times(
    frames: npt.ArrayLike, video_id: str | npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Vectorised :func:`epic_frame_time`: one video id, or one per frame."""
    frames = np.asarray(frames, dtype=np.int64)
    if np.any(frames < 1):
        raise ValueError(f"EPIC JPEG frames are numbered from 1, got {int(frames.min())}")
    return frame_start_times(frames, _fps_array(video_id, frames.shape))


def frame_start_times(frames: npt.ArrayLike, fps: float | npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The earliest float64 time ``t`` with ``floor(t * fps) == k`` for each frame ``k``: the
    time at which frame ``k`` starts under the float64 rule of :func:`jpeg_frame_number`."""
    frames = np.asarray(frames, dtype=np.int64)
    fps = np.broadcast_to(np.asarray(fps, dtype=np.float64), frames.shape)
    times = frames / fps
    # frames / fps is within an ulp or two of the boundary floor(t * fps) == frame, on
    # either side: step up onto it, then down to its first float.
    short = np.floor(times * fps) < frames
    while np.any(short):
        times[short] = np.nextafter(times[short], np.inf)
        short = np.floor(times * fps) < frames
    earlier = np.nextafter(times, -np.inf)
    late = np.floor(earlier * fps) >= frames
    while np.any(late):
        times[late] = earlier[late]
        earlier = np.nextafter(times, -np.inf)
        late = np.floor(earlier * fps) >= frames
    return times


def _fps_array(video_id: str | npt.ArrayLike, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    if isinstance(video_id, str):
        return np.full(shape, epic_jpeg_fps(video_id), dtype=np.float64)
    ids = np.asarray(video_id)
    if ids.shape != shape:
        raise ValueError(f"video ids of shape {ids.shape} for values of shape {shape}")
    unique, inverse = np.unique(ids, return_inverse=True)
    fps = np.array([epic_jpeg_fps(str(vid)) for vid in unique], dtype=np.float64)
    return fps[inverse].reshape(shape)
