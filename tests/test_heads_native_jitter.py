"""Native-frame temporal jitter: X-MIC's bin rules, the data that draws them, the trainer and the
``xmic`` task on streams holding every native frame."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from egofeat.heads import TrainConfig, Trainer, load_head_data
from egofeat.heads.jitter import JitteredData, NativeBins, context_view
from egofeat.heads.xmic_task import xmic_native_bins
from egofeat.store import FeatureStore

LENGTHS = [1, 2, 5, 15, 16, 17, 33, 48, 100, 211, 1000]


def xmic_epic(n: int, start: int = 1000) -> tuple[list[int], list[set[int]]]:
    """X-MIC's EPIC loader (Dassl data_manager): eval frames and each bin's training candidates,
    relative to the first of the n stored frames range(start, start + n)."""
    frames, step = np.linspace(start, start + n - 1, 16, endpoint=False, retstep=True)
    evaluation = [int(i + step / 2) - start for i in frames]
    width = int(step)
    candidates = [{int(i) + r - start for r in range(width)} if width else {int(i) - start}
                  for i in frames]
    return evaluation, candidates


def xmic_ego4d(n: int, start: int = 67) -> tuple[list[int], list[int], list[set[int]]]:
    """X-MIC's Ego4D loader (ego4d_helper.py) on the n frames of its window [start, start + n):
    eval frames of the classified and the conditioning features, and training candidates."""
    frames, step = np.linspace(start, start + n, 16, endpoint=False, retstep=True)
    evaluation = [int(i + step / 2) for i in frames]
    context = [int(i + step / 2) - start for i in evaluation]  # shifted a second half bin
    width = int(step)
    candidates = [{int(i) + r - start for r in range(width)} if width else {int(i) - start}
                  for i in frames]
    return [e - start for e in evaluation], context, candidates


@pytest.mark.parametrize("n", LENGTHS)
def test_epic_rule_reads_xmic_frames(n):
    evaluation, candidates = xmic_epic(n)
    rule = NativeBins(16, span="to-last")
    classified, context = rule.frames(np.array([n]))
    assert classified[0].tolist() == evaluation and context[0].tolist() == evaluation
    draws = rule.frames(np.full(3000, n), np.random.default_rng(0))[0]  # 3000 draws
    assert [set(column) for column in draws.T.tolist()] == candidates  # any frame of the bin


@pytest.mark.parametrize("n", LENGTHS)
def test_ego4d_rule_offsets_the_conditioning_frames(n):
    evaluation, context_eval, candidates = xmic_ego4d(n)
    rule = xmic_native_bins("ego4d")
    assert rule == NativeBins(16, span="to-end", context_offset=True)
    classified, context = rule.frames(np.array([n]))
    assert classified[0].tolist() == evaluation
    # half a bin later; X-MIC's last one can fall one past the window, which a store lacks
    assert context[0].tolist() == [min(c, n - 1) for c in context_eval]
    first, second = rule.frames(np.full(3000, n), np.random.default_rng(1))
    assert [set(column) for column in first.T.tolist()] == candidates
    width = max(int(n / 16), 1)
    offsets = second - first
    assert (offsets >= 0).all() and (offsets < width).all()  # jittered a second time
    if width > 1:
        assert (offsets > 0).any()
    assert xmic_native_bins("epic100") == xmic_native_bins("kitchen-a") == NativeBins(16)


# ---- data: a store of native streams whose features say which frame they are ------------------


def native_store(path, lengths: dict[str, int], *, full_lengths: dict[str, int] | None = None):
    """Streams e/hand and e/full; frame j of segment i is the vector (j, i) (full: (j, -i))."""
    store = FeatureStore.open(path, create=True)
    ids = list(lengths)
    store.add_segments(pl.DataFrame({
        "dataset": ["d"] * len(ids), "split": ["train"] * len(ids), "segment_id": ids,
        "video_id": [f"v{i % 3}" for i in range(len(ids))], "start_sec": [0.0] * len(ids),
        "end_sec": [1.0] * len(ids), "noun_class": [i % 2 for i in range(len(ids))],
    }))
    provenance = {"sampling": {"kind": "native", "fps": 30.0}}
    for crop, sign, counts in (("hand", 1, lengths), ("full", -1, full_lengths or lengths)):
        stream = store.create_stream(f"e/{crop}", dim=2, provenance=provenance, frames_per_row=None)
        with stream.part_writer("p") as writer:
            for i, segment in enumerate(ids):
                frames = np.arange(counts[segment], dtype=np.float32)
                writer.add(segment, "v", np.stack([frames, np.full_like(frames, sign * i)], 1))
    return store


LOADED = {f"s{i}": n for i, n in enumerate([20, 1, 48, 211, 33, 17])}


def load_native(store, rule=None, **options):
    return load_head_data(store, ["e/hand"], tasks=["noun"], native=rule or NativeBins(16),
                          context_views={context_view("e/hand"): "e/hand",
                                         context_view("e/full"): "e/full"}, **options)


def test_native_data_holds_xmic_eval_frames_and_draws_any_frame_each_epoch(tmp_path):
    store = native_store(tmp_path / "s", LOADED)
    data = load_native(store, xmic_native_bins("ego4d"))
    assert isinstance(data, JitteredData) and data.features["e/hand"].shape == (6, 16, 2)
    assert set(data.features) == {"e/hand", "e/hand@context", "e/full@context"}
    assert data.row_lengths.tolist() == list(LOADED.values())
    for i, n in enumerate(LOADED.values()):
        evaluation, context, _ = xmic_ego4d(n)
        assert data.features["e/hand"][i, :, 0].tolist() == evaluation
        assert data.features["e/hand@context"][i, :, 0].tolist() == [min(c, n - 1) for c in context]
        assert data.features["e/full@context"][i, :, 1].tolist() == [-i] * 16  # its own rows
    first, again, second = data.epoch(3, 0), data.epoch(3, 0), data.epoch(3, 1)
    assert type(first) is not JitteredData and torch.equal(first.features["e/hand"], again.features["e/hand"])
    assert not torch.equal(first.features["e/hand"], second.features["e/hand"])
    # the conditioning views of one draw read the same frames in both streams
    assert torch.equal(first.features["e/hand@context"][..., 0], first.features["e/full@context"][..., 0])
    # a subset keeps each row's frames (the banks are shared)
    part = data.subset(np.array([3, 0]))
    assert part.segment_ids.tolist() == ["s3", "s0"] and part.banks is data.banks
    drawn = part.epoch(3, 5).features["e/hand"]
    assert drawn[0, :, 1].tolist() == [3] * 16 and drawn[1, :, 1].tolist() == [0] * 16
    assert (drawn[0, :, 0] < 211).all() and (drawn[1, :, 0] < 20).all()
    kept, held = data.holdout(0.34, group_by="video_id")
    assert isinstance(kept, JitteredData) and len(kept) + len(held) == 6
    assert not isinstance(data.time_mean(), JitteredData)


def test_native_data_refuses_fixed_or_mismatched_streams(tmp_path):
    store = native_store(tmp_path / "s", {"a": 5, "b": 7}, full_lengths={"a": 5, "b": 8})
    with pytest.raises(ValueError, match="hold different frames of segment 'b'"):
        load_native(store)
    fixed = store.create_stream("e/fixed", dim=2, provenance={}, frames_per_row=3)
    with fixed.part_writer("p") as writer:
        for segment in ("a", "b"):
            writer.add(segment, "v", np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="--sampling native"):
        load_head_data(store, ["e/fixed"], tasks=["noun"], native=NativeBins())
    with pytest.raises(ValueError, match="native=NativeBins"):
        load_head_data(store, ["e/hand"], tasks=["noun"], context_views={"x": "e/full"})


class FrameMean(nn.Module):
    """A classifier of the mean frame of one stream (not time-pooled: it sees every frame)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.linear = nn.Linear(2, 2)

    def forward(self, batch):
        return {"noun": self.linear(batch["features"][self.key].mean(dim=1))}


def test_the_trainer_trains_each_epoch_on_that_epochs_draw(tmp_path):
    data = load_native(native_store(tmp_path / "s", LOADED))
    seen: list[dict[int, torch.Tensor]] = [{}]  # per epoch: row -> the frames trained on

    def loss(outputs, batch):
        for row, features in zip(batch["index"].tolist(), batch["features"]["e/hand"], strict=True):
            seen[-1][row] = features
        return nn.functional.cross_entropy(outputs["noun"], batch["labels"]["noun"])

    settings = TrainConfig(epochs=2, batch_size=4, tasks=["noun"], patience=None, progress=False,
                           seed=4, warmup_epochs=0)
    Trainer(settings, loss_fn=loss, callbacks=[lambda record: seen.append({})]).fit(
        FrameMean("e/hand"), data)
    assert [len(rows) for rows in seen] == [6, 6, 0]
    for epoch, rows in enumerate(seen[:2]):
        expected = data.epoch(4, epoch).features["e/hand"].float()
        assert all(torch.equal(rows[row], expected[row]) for row in range(6))
