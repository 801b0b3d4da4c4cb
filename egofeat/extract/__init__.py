"""Extraction: frame plans, video decoding, hand-object boxes and crops, synthetic media.

Importing this package stays light (numpy, polars, PyAV, Pillow): decode worker processes
import it, so the encoders (torch) live in :mod:`egofeat.extract.encoders` and are imported
from there.
"""

from egofeat.extract.boxes import (
    BBox,
    FrameDetections,
    HandDetection,
    HandObjectBoxes,
    HandSide,
    HandState,
    ObjectDetection,
    UnionRule,
    crop,
    decode_detections,
    load_detection_payloads,
)
from egofeat.extract.decode import DecodeJob, DecodeResult, decode_job
from egofeat.extract.layout import VideoLayout
from egofeat.extract.plan import (
    ExtractionPlan,
    FrameSampler,
    VideoPlan,
    epic_frame_rate,
    frame_number_at,
    plan_videos,
)
from egofeat.extract.pool import DecodePool
from egofeat.extract.readers import Frames, VideoDecodeError, VideoReader, open_video

__all__ = [
    "BBox",
    "DecodeJob",
    "DecodePool",
    "DecodeResult",
    "ExtractionPlan",
    "FrameDetections",
    "FrameSampler",
    "Frames",
    "HandDetection",
    "HandObjectBoxes",
    "HandSide",
    "HandState",
    "ObjectDetection",
    "UnionRule",
    "VideoDecodeError",
    "VideoLayout",
    "VideoPlan",
    "VideoReader",
    "crop",
    "decode_detections",
    "decode_job",
    "epic_frame_rate",
    "frame_number_at",
    "load_detection_payloads",
    "open_video",
    "plan_videos",
]
