"""The README's notebook example runs as written, on a store laid out as `egofeat demo` makes it."""

from __future__ import annotations

import re
from pathlib import Path

from egofeat.config import ExtractConfig
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.pipelines.executors import execute

README = Path(__file__).resolve().parents[1] / "README.md"


def notebook_example() -> str:
    block = re.search(r"<!-- notebook -->\n```python\n(.*?)```\n<!-- /notebook -->", README.read_text(), re.S)
    assert block, "README.md lacks the <!-- notebook --> python block"
    return block.group(1)


def test_the_notebook_example_runs(tmp_path, monkeypatch, capsys):
    demo = tmp_path / "egofeat-demo"
    dataset = write_synthetic_dataset(demo / "dataset", n_videos=4, segments_per_video=12)
    annotations = dataset.annotations_dir
    execute(ExtractConfig(
        annotations=[annotations / "EPIC_100_train.csv", annotations / "EPIC_100_validation.csv"],
        videos=dataset.videos_root, store=demo / "store", crop="both", boxes=dataset.videos_root,
        frames=4, workers=0, progress=False))
    monkeypatch.chdir(tmp_path)
    exec(compile(notebook_example(), str(README), "exec"), {})  # noqa: S102
    printed = capsys.readouterr().out
    verb, action = (float(x) for x in re.findall(r"top-1 ([0-9.]+)", printed))
    assert verb > 30 and 0 <= action <= 100  # chance is 20 %: the head learned something
