"""EPIC-KITCHENS-100 action recognition challenge submission (``reference/formats.md`` §3.4).

The submission is a zip holding one ``test.json``::

    {"version": "0.2", "challenge": "action_recognition",
     "sls_pt": 0-5, "sls_tl": 0-5, "sls_td": 0-5,
     "results": {"P01_101_0": {"verb": {"0": 1.22, ..., "96": ...},
                               "noun": {"0": 0.80, ..., "299": ...}}, ...}}

Scores are the raw (pre-softmax) verb and noun outputs, keyed by stringified class id.
The SLS levels (pre-training, training labels, training data) are described in §3.4.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .epic import NOUN_CLASSES, VERB_CLASSES
from .predictions import Predictions

SUBMISSION_VERSION = "0.2"
CHALLENGE = "action_recognition"


def write_submission(
    predictions: Predictions,
    path_zip: str | Path,
    *,
    sls_pt: int = 2,
    sls_tl: int = 3,
    sls_td: int = 4,
) -> Path:
    """Write the challenge zip for ``predictions`` (97 verb and 300 noun scores per segment).

    Args:
        predictions: outputs on the test segments (verb and noun logits).
        path_zip: where to write the ``.zip``.
        sls_pt, sls_tl, sls_td: scale-of-supervision levels, integers 0–5 (defaults as the
            official ``create_submission.py``).
    """
    for name, level in (("sls_pt", sls_pt), ("sls_tl", sls_tl), ("sls_td", sls_td)):
        if (
            isinstance(level, bool)
            or not isinstance(level, (int, np.integer))
            or not (0 <= level <= 5)
        ):
            raise ValueError(f"{name} must be an integer from 0 to 5, got {level!r}")
    missing = [task for task in ("verb", "noun") if task not in predictions.logits]
    if missing:
        raise ValueError(
            f"a submission needs verb and noun scores; these predictions lack {missing}: "
            "train with --task verb,noun"
        )
    verb_output, noun_output = predictions.logits["verb"], predictions.logits["noun"]
    widths = (verb_output.shape[1], noun_output.shape[1])
    if widths != (VERB_CLASSES, NOUN_CLASSES):
        raise ValueError(
            f"a submission needs {VERB_CLASSES} verb and {NOUN_CLASSES} noun scores per segment, "
            f"got {widths[0]} and {widths[1]}"
        )
    for name, block in (("verb_output", verb_output), ("noun_output", noun_output)):
        if not np.isfinite(block).all():
            row = int(np.nonzero(~np.isfinite(block).all(axis=1))[0][0])
            raise ValueError(
                f"{name} of segment {predictions.segment_ids[row]} has NaN/inf scores; "
                "JSON cannot carry them"
            )

    verb_keys = [str(c) for c in range(VERB_CLASSES)]
    noun_keys = [str(c) for c in range(NOUN_CLASSES)]
    payload = {
        "version": SUBMISSION_VERSION,
        "challenge": CHALLENGE,
        "sls_pt": int(sls_pt),
        "sls_tl": int(sls_tl),
        "sls_td": int(sls_td),
        "results": {
            narration_id: {
                "verb": dict(zip(verb_keys, verb, strict=True)),
                "noun": dict(zip(noun_keys, noun, strict=True)),
            }
            for narration_id, verb, noun in zip(
                predictions.segment_ids,
                verb_output.astype(np.float64).tolist(),
                noun_output.astype(np.float64).tolist(),
                strict=True,
            )
        },
    }
    path_zip = Path(path_zip)
    partial = path_zip.with_name(f".{path_zip.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=5) as zf:
        zf.writestr("test.json", json.dumps(payload))
    os.replace(partial, path_zip)
    return path_zip
