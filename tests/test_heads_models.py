"""Head architectures and the head registry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from egofeat.heads import create_head, list_heads, register_head
from egofeat.heads.models import Dropout, TRNHead, sample_subsets, temporal_shift
from egofeat.heads.registry import HeadSpec, head_kwargs

CLASSES = {"verb": 5, "noun": 7}
SMALL = {  # small widths keep the tests fast; defaults are exercised in test_default_sizes
    "linear": {},
    "mlp": {"hidden": 32},
    "tsn": {},
    "trn": {"bottleneck": 16, "hidden": 16},
    "tsm": {"width": 32, "depth": 2},
}


def batch(streams: dict[str, tuple[int, int]], size: int = 4, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    features = {
        name: torch.randn(size, frames, dim, generator=generator)
        for name, (frames, dim) in streams.items()
    }
    return {"features": features}


def test_builtin_heads_are_registered():
    assert set(SMALL) <= set(list_heads())


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("frames", [1, 8])
@pytest.mark.parametrize("two_streams", [False, True])
def test_output_shapes(name, frames, two_streams):
    streams = {"clip/full": (frames, 12)}
    if two_streams:
        streams["clip/hand"] = (frames, 6)
    head = create_head(
        name,
        in_dims={stream: dim for stream, (_, dim) in streams.items()},
        num_frames=frames,
        num_classes=CLASSES,
        **SMALL[name],
    )
    for training in (True, False):
        head.train(training)
        out = head(batch(streams))
        assert list(out) == ["verb", "noun"]
        assert out["verb"].shape == (4, 5) and out["noun"].shape == (4, 7)
        assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_default_sizes_build_and_run(name):
    head = create_head(name, in_dims=64, num_frames=8, num_classes={"verb": 97, "noun": 300})
    out = head.eval()(batch({"any-name": (8, 64)}, size=2))
    assert out["verb"].shape == (2, 97) and out["noun"].shape == (2, 300)


def test_single_frame_stream_is_repeated_over_frames():
    head = create_head("tsm", in_dims={"frames": 8, "clip": 4}, num_frames=6, num_classes=CLASSES)
    data = batch({"frames": (6, 8), "clip": (1, 4)})
    repeated = {
        "features": {
            "frames": data["features"]["frames"],
            "clip": data["features"]["clip"].expand(-1, 6, -1),
        }
    }
    head.eval()
    torch.testing.assert_close(head(data)["verb"], head(repeated)["verb"])


def test_extra_streams_in_the_batch_are_ignored():
    head = create_head("linear", in_dims={"a": 8}, num_frames=4, num_classes=CLASSES).eval()
    one = batch({"a": (4, 8)})
    two = {"features": {**one["features"], "teacher": torch.randn(4, 1, 3)}}
    torch.testing.assert_close(head(one)["noun"], head(two)["noun"])


def test_bad_batches_are_explained():
    head = create_head("tsn", in_dims={"a": 8, "b": 4}, num_frames=4, num_classes=CLASSES)
    with pytest.raises(KeyError, match=r"no stream\(s\) \['b'\]"):
        head(batch({"a": (4, 8)}))
    with pytest.raises(ValueError, match=r"stream 'b': expected a \(batch, frames, 4\)"):
        head(batch({"a": (4, 8), "b": (4, 5)}))
    with pytest.raises(ValueError, match="different frame counts"):
        head(batch({"a": (4, 8), "b": (3, 4)}))
    anonymous = create_head("tsn", in_dims=8, num_frames=4, num_classes=CLASSES)
    with pytest.raises(ValueError, match="int in_dims"):
        anonymous(batch({"a": (4, 8), "b": (4, 8)}))
    trn = create_head("trn", in_dims=8, num_frames=4, num_classes=CLASSES, **SMALL["trn"])
    with pytest.raises(ValueError, match="built for 4 frames, got 3"):
        trn(batch({"a": (3, 8)}))


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown head 'nope'; registered heads: .*linear"):
        create_head("nope", in_dims=4, num_frames=1, num_classes=CLASSES)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['hiden'\]"):
        create_head("mlp", in_dims=4, num_frames=1, num_classes=CLASSES, hiden=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_head("mlp", in_dims=4, num_frames=1, num_classes={})
    with pytest.raises(ValueError, match="already registered"):
        register_head("linear")(lambda **kwargs: None)
    assert head_kwargs("mlp") == {"hidden": 512, "dropout": 0.5}


def test_head_spec_rebuilds_the_same_architecture():
    head = create_head("trn", in_dims={"a": 8}, num_frames=5, num_classes=CLASSES, hidden=12)
    spec = HeadSpec.from_dict(head.head_spec.to_dict())
    assert spec == head.head_spec
    rebuilt = spec.build()
    rebuilt.load_state_dict(head.state_dict())
    data = batch({"a": (5, 8)})
    torch.testing.assert_close(head.eval()(data)["verb"], rebuilt.eval()(data)["verb"])


def test_trn_training_samples_subsets_and_eval_is_deterministic():
    head = create_head("trn", in_dims=8, num_frames=8, num_classes=CLASSES, dropout=0.0)
    data = batch({"a": (8, 8)})
    head.train()
    torch.manual_seed(1)
    first = head(data)["verb"]
    second = head(data)["verb"]
    assert not torch.allclose(first, second)  # different random subsets
    head.eval()
    torch.manual_seed(1)
    evaluated = head(data)["verb"]
    torch.manual_seed(2)
    torch.testing.assert_close(head(data)["verb"], evaluated, rtol=0, atol=0)


def _naive_trn_expectation(head: TRNHead, data: dict) -> torch.Tensor:
    """Sum over scales of m_k * mean over *all* k-subsets of g_k, computed the slow way."""
    x = head.input(data["features"])
    frames = head.frame_fc(x)
    total = 0
    for index, (k, count) in enumerate(zip(head.scales, head.train_counts, strict=True)):
        layers = head.relations[index]
        outputs = [
            layers["fc2"](F.relu(layers["fc1"](F.relu(frames[:, list(subset)].flatten(1)))))
            for subset in itertools.combinations(range(head.num_frames), k)
        ]
        total = total + count * torch.stack(outputs).mean(0)
    return total


def test_trn_eval_with_all_subsets_is_the_expected_training_output():
    head = create_head(
        "trn", in_dims=6, num_frames=5, num_classes=CLASSES, eval_subsets=100, hidden=8
    ).eval()
    data = batch({"a": (5, 6)})
    expected = _naive_trn_expectation(head, data)
    out = head(data)
    torch.testing.assert_close(torch.cat([out["verb"], out["noun"]], dim=1), expected)


def test_trn_uses_max_subsets_per_scale():
    head = create_head("trn", in_dims=6, num_frames=8, num_classes=CLASSES, eval_subsets=3)
    assert head.scales == [8, 7, 6, 5, 4, 3, 2]
    assert head.train_counts == [1, 3, 3, 3, 3, 3, 3]  # 1 + 6 * 3 = 19 relations
    assert [getattr(head, f"eval_subsets_{k}").shape for k in (8, 2)] == [(1, 8), (3, 2)]
    assert create_head("trn", in_dims=6, num_frames=1, num_classes=CLASSES).scales == [1]


@pytest.mark.parametrize(
    ("frames", "size", "count"), [(8, 3, 3), (16, 8, 5), (5, 4, 5), (40, 20, 3)]
)
def test_sample_subsets_are_distinct_sorted_and_in_range(frames, size, count):
    subsets = sample_subsets(frames, size, count, torch.Generator().manual_seed(0))
    assert subsets.shape == (count, size)
    assert len({tuple(s) for s in subsets.tolist()}) == count
    assert (subsets[:, 1:] > subsets[:, :-1]).all()
    assert subsets.min() >= 0 and subsets.max() < frames
    with pytest.raises(ValueError, match="only"):
        sample_subsets(4, 2, math.comb(4, 2) + 1)


def test_temporal_shift_moves_one_eighth_each_way_with_zero_padding():
    x = torch.arange(1, 1 + 3 * 16, dtype=torch.float32).view(1, 3, 16)
    shifted = temporal_shift(x)
    # channels 0-1 take frame t+1, channels 2-3 frame t-1, the rest stay.
    torch.testing.assert_close(shifted[0, :2, :2], x[0, 1:, :2])
    assert (shifted[0, 2, :2] == 0).all()
    torch.testing.assert_close(shifted[0, 1:, 2:4], x[0, :2, 2:4])
    assert (shifted[0, 0, 2:4] == 0).all()
    torch.testing.assert_close(shifted[..., 4:], x[..., 4:])


def test_dropout_matches_torch_semantics():
    dropout = Dropout(0.25)
    x = torch.ones(200, 100)
    torch.manual_seed(0)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert dropout.eval()(x) is x


# ---- the C1 options: bottleneck init, TSN-style segment sampling --------------------------------


@pytest.mark.parametrize("name,layer", [("tsn", "classifier.tasks.verb"), ("trn", "frame_fc"),
                                        ("tsm", "classifier.tasks.noun")])
def test_init_std_draws_the_per_frame_layer_from_a_narrow_normal(name, layer):
    head = create_head(name, in_dims={"a": 512}, num_frames=8, num_classes={"verb": 97, "noun": 300},
                       init_std=0.001, **SMALL[name])
    weight, bias = head.get_submodule(layer).weight, head.get_submodule(layer).bias
    assert weight.std().item() == pytest.approx(0.001, rel=0.1) and abs(weight.mean().item()) < 1e-4
    assert torch.equal(bias, torch.zeros_like(bias))
    default = create_head(name, in_dims={"a": 512}, num_frames=8, num_classes={"verb": 97, "noun": 300},
                          **SMALL[name])
    assert default.get_submodule(layer).weight.std().item() > 0.01  # torch's default: ~1/sqrt(3 fan_in)


def test_bins_train_on_one_frame_per_bin_and_tsn_tests_on_every_frame():
    torch.manual_seed(0)
    head = create_head("tsn", in_dims={"a": 4}, num_frames=24, num_classes={"verb": 3}, dropout=0.0, bins=8)
    frames = torch.arange(24.0)[None, :, None].expand(2, 24, 4)  # frame t holds the value t
    seen = []
    head.frames.register_forward_hook(lambda module, args, output: seen.append(output[..., 0]))
    head.train()({"features": {"a": frames}})
    picked = seen[-1]
    assert picked.shape == (2, 8)
    assert torch.equal(picked // 3, torch.arange(8.0).expand(2, 8))  # one of the 3 frames of each bin
    head.eval()({"features": {"a": frames}})
    assert torch.equal(seen[-1], frames[..., 0])  # evaluation: all 24 frames (C1 tests TSN on 25)
    layer = head.classifier.tasks["verb"]
    expected = layer(frames.mean(dim=1))  # the mean of per-frame logits of a linear layer
    assert torch.allclose(head({"features": {"a": frames}})["verb"], expected, atol=1e-5)


def test_trn_with_bins_is_built_for_the_bins_and_reads_their_centres_at_evaluation():
    head = create_head("trn", in_dims={"a": 4}, num_frames=16, num_classes={"verb": 3}, bins=8,
                       **SMALL["trn"])
    assert head.num_frames == 8 and head.scales[0] == 8
    seen = []
    head.frames.register_forward_hook(lambda module, args, output: seen.append(output[..., 0]))
    frames = torch.arange(16.0)[None, :, None].expand(2, 16, 4)
    head.eval()({"features": {"a": frames}})
    assert torch.equal(seen[-1], (torch.arange(8.0) * 2).expand(2, 8))  # per_bin 2: the earlier middle frame
    with pytest.raises(ValueError, match="12 frames per segment, not a multiple of head.bins=8"):
        head({"features": {"a": torch.zeros(2, 12, 4)}})
