"""Dataset adapters: annotation files -> the canonical segment table, vocabularies, splits.

Every loader returns a polars DataFrame whose leading columns are :data:`SEGMENT_COLUMNS`
(dtypes in :data:`SEGMENT_SCHEMA`), checked by :func:`validate_segments`; malformed input
raises :class:`SegmentTableError` naming the file, row and column. This layer imports
nothing else of egofeat.
"""

from egofeat.sources.charades import (
    load_charades_classes,
    load_charades_ego,
    parse_charades_actions,
)
from egofeat.sources.ego4d import (
    EILEV_WINDOW,
    WINDOWS,
    XMIC_ORIGINAL_WINDOW,
    XMIC_WINDOW,
    CentralFrames,
    Window,
    load_ego4d,
    load_ego4d_fho,
    load_ego4d_lta,
)
from egofeat.sources.epic100 import (
    EpicAnnotations,
    infer_epic_split,
    load_epic100,
    load_tail_classes,
    load_unseen_participants,
    load_video_info,
)
from egofeat.sources.epic_frames import (
    epic_frame_at,
    epic_frame_time,
    epic_frame_times,
    epic_frames_at,
    epic_jpeg_fps,
    frame_start_times,
    jpeg_frame_number,
)
from egofeat.sources.errors import SegmentTableError
from egofeat.sources.generic import load_segments
from egofeat.sources.parsing import parse_timestamp
from egofeat.sources.retrieval import EgoMcq, MirItems, load_egoclip, load_egomcq, load_epic_mir
from egofeat.sources.schema import SEGMENT_COLUMNS, SEGMENT_SCHEMA, validate_segments
from egofeat.sources.vocab import (
    EPIC_CLASS_FILES,
    Vocabulary,
    epic_class_files,
    load_epic_vocabularies,
)
from egofeat.sources.vocabularies import (
    Resolved,
    class_list_vocabularies,
    table_vocabularies,
    vocabulary_frame,
)
from egofeat.sources.xmic_splits import (
    ClassSplit,
    class_splits,
    class_texts,
    ego4d_vocabulary,
    epic_readable_name,
    load_xmic_split,
    match_classes,
    xmic_ego4d_text,
)

__all__ = [
    "EILEV_WINDOW",
    "EPIC_CLASS_FILES",
    "SEGMENT_COLUMNS",
    "SEGMENT_SCHEMA",
    "WINDOWS",
    "XMIC_ORIGINAL_WINDOW",
    "XMIC_WINDOW",
    "CentralFrames",
    "ClassSplit",
    "class_list_vocabularies",
    "class_splits",
    "class_texts",
    "EgoMcq",
    "EpicAnnotations",
    "MirItems",
    "SegmentTableError",
    "Resolved",
    "Vocabulary",
    "Window",
    "ego4d_vocabulary",
    "epic_class_files",
    "epic_frame_at",
    "epic_frame_time",
    "epic_frame_times",
    "epic_frames_at",
    "epic_jpeg_fps",
    "frame_start_times",
    "epic_readable_name",
    "infer_epic_split",
    "jpeg_frame_number",
    "load_charades_classes",
    "load_charades_ego",
    "load_ego4d",
    "load_ego4d_fho",
    "load_ego4d_lta",
    "load_egoclip",
    "load_egomcq",
    "load_epic100",
    "load_epic_mir",
    "load_epic_vocabularies",
    "load_segments",
    "load_tail_classes",
    "load_unseen_participants",
    "load_video_info",
    "load_xmic_split",
    "xmic_ego4d_text",
    "match_classes",
    "parse_charades_actions",
    "parse_timestamp",
    "table_vocabularies",
    "validate_segments",
    "vocabulary_frame",
]
