"""EILEV's in-context example sampler as a recipe for `egofeat neighbors`.

Facts from yukw777/EILEV (commit 41c461c): the sampler of ``eilev/data/frame.py``
(``FrameInterleavedDataset``), the evaluation pre-sampling script
(``scripts/general/sample_in_context_examples.py``) and the training command in ``README.md``.
"""

from __future__ import annotations

from egofeat.recipes import Recipe, Setting, register_recipe

REPO = "yukw777/EILEV"
FRAME = f"{REPO} eilev/data/frame.py"

register_recipe(Recipe(
    name="eilev-incontext",
    command="neighbors",
    summary="EILEV's in-context examples: seeded random draws in the same-verb/other-noun and "
            "same-noun/other-verb buckets, then random others, shuffled, the query last",
    reference=FRAME,
    settings=(
        Setting("sampler", "eilev-random", f"{FRAME} (_sample_in_context_examples_based_on_structured_verb_noun: "
                "random.sample within each bucket, then from the rest)"),
        Setting("k", 16, f"{REPO} README.md (--train_num_in_context_examples_per_sample 16, "
                "--val_num_in_context_examples_per_sample 16)"),
        Setting("verb_ratio", 0.5, f"{REPO} README.md (--verb_noun_ratio 0.5); {FRAME} (default 0.5)"),
        Setting("order", "shuffle", f"{FRAME} (__getitem__: random.sample(examples, len(examples)), "
                "the query appended last)"),
        Setting("seed", 42, f"{REPO} scripts/general/sample_in_context_examples.py (--random_seed 42)",
                note="EILEV draws from Python's random module, egofeat from numpy's generator: the same "
                     "procedure and distribution, not the same examples for a seed"),
    ),
))
