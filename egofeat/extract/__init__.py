"""Extraction: frame plans, video decoding, hand-object boxes and crops, synthetic media.

Importing this package stays light (numpy, polars, PyAV, Pillow): decode worker processes
import it, so the encoders (torch) live in :mod:`egofeat.extract.encoders` and are imported
from there.
"""

from egofeat.extract.boxes import HandObjectBoxes, UnionRule, crop
from egofeat.extract.decode import DecodeJob, DecodeResult, decode_job
from egofeat.extract.detections import (
    BBox,
    FrameDetections,
    HandDetection,
    HandSide,
    HandState,
    ObjectDetection,
    decode_detections,
    load_detection_payloads,
)
from egofeat.extract.layout import VideoLayout
from egofeat.extract.plan import (
    ExtractionPlan,
    FrameSampler,
    VideoPlan,
    plan_videos,
)
from egofeat.extract.pool import DecodePool
from egofeat.extract.readers import Frames, VideoDecodeError, VideoReader
from egofeat.extract.video import open_video

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
    "load_detection_payloads",
    "open_video",
    "plan_videos",
]
