"""Retrieval projectors, contrastive losses on hand-computed cases, and a learnable toy task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from egofeat.heads.contrastive import (
    OWN_CAPTION,
    cosine_similarity_matrix,
    dual_softmax,
    ego_nce,
    info_nce,
    max_margin,
    sample_positive_captions,
    scene_negative_indices,
    zero_shot_similarity,
)
from egofeat.heads.retrieval import RetrievalProjector


def unit(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows), dim=-1)


@pytest.mark.parametrize("head", ["linear", "relu-linear", "mlp"])
def test_projector_pools_frames_and_normalizes(head):
    torch.manual_seed(0)
    model = RetrievalProjector(12, 8, 16, video_head=head, text_head=head, hidden_dim=10)
    video, text = torch.randn(3, 5, 12), torch.randn(3, 8)
    v, t = model(video, text)
    assert v.shape == t.shape == (3, 16)
    assert torch.allclose(v.norm(dim=-1), torch.ones(3)) and torch.allclose(
        t.norm(dim=-1), torch.ones(3)
    )
    assert torch.allclose(model.encode_video(video.mean(1)), v, atol=1e-6)  # mean, then project


def test_projector_rejects_unknown_heads():
    with pytest.raises(ValueError, match="unknown projection 'conv'"):
        RetrievalProjector(4, 4, video_head="conv")


def test_zero_shot_similarity_is_cosine_of_frame_means():
    video = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, -3.0], [0.0, -1.0]]])
    text = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    expected = torch.tensor([[1.0, math.sqrt(0.5)], [-math.sqrt(0.5), -1.0]])
    assert torch.allclose(zero_shot_similarity(video, text), expected, atol=1e-6)


def test_info_nce_by_hand():
    v = t = torch.eye(2)
    # each row: -log(e^1 / (e^1 + e^0)), twice (both directions are summed)
    assert info_nce(v, t, temperature=1.0).item() == pytest.approx(2 * math.log(1 + math.exp(-1)))
    # temperature scales the logits; cosine ignores the embedding norm
    assert info_nce(3 * v, t, temperature=0.5).item() == pytest.approx(
        2 * math.log(1 + math.exp(-2))
    )


def test_info_nce_sums_two_directions():
    v = unit([1.0, 0.0], [0.6, 0.8])
    t = unit([0.0, 1.0], [1.0, 0.0])
    S = (v @ t.T).tolist()  # [[0, 1], [0.8, 0.6]]

    def row_loss(row, target):
        return -(row[target] - math.log(sum(math.exp(x) for x in row)))

    v2t = (row_loss(S[0], 0) + row_loss(S[1], 1)) / 2
    columns = [[S[0][0], S[1][0]], [S[0][1], S[1][1]]]
    t2v = (row_loss(columns[0], 0) + row_loss(columns[1], 1)) / 2
    assert info_nce(v, t, temperature=1.0).item() == pytest.approx(v2t + t2v, rel=1e-5)


def test_ego_nce_by_hand():
    v = unit([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    t = unit([1.0, 0.0], [1.0, 1.0], [0.0, 1.0])
    verbs = torch.tensor([[1, 0], [1, 1], [0, 1]])  # multi-hot: 0~1 share verb 0, 1~2 verb 1
    nouns = torch.tensor([3, 3, 4])  # class indices: 0~1 share a noun, 2 does not
    S = (v @ t.T).tolist()
    positives = [[0, 1], [0, 1], [2]]  # 0~1 share a verb and a noun; 1~2 only a verb

    def direction(matrix):
        total = 0.0
        for i, row in enumerate(matrix):
            mass = sum(math.exp(row[j]) for j in positives[i])
            total -= math.log(mass / sum(math.exp(x) for x in row))
        return total / len(matrix)

    expected = direction(S) + direction([list(col) for col in zip(*S, strict=True)])
    assert ego_nce(v, t, verbs, nouns, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_ego_nce_without_shared_actions_is_info_nce():
    torch.manual_seed(0)
    v, t = torch.randn(4, 6), torch.randn(4, 6)
    classes = torch.arange(4)
    assert ego_nce(v, t, classes, classes).item() == pytest.approx(info_nce(v, t).item(), rel=1e-5)


def test_ego_nce_appends_same_video_negatives():
    torch.manual_seed(1)
    v, t, v_neg, t_neg = (torch.randn(3, 6) for _ in range(4))
    verbs, nouns = torch.arange(3), torch.arange(3)
    doubled = ego_nce(v, t, verbs, nouns, same_video_negatives=(v_neg, t_neg, verbs + 3, nouns + 3))
    assert doubled.item() == pytest.approx(
        info_nce(torch.cat([v, v_neg]), torch.cat([t, t_neg])).item(), rel=1e-5
    )
    # a negative with the same verb and noun as its anchor becomes a positive of that anchor
    shared = ego_nce(v, t, verbs, nouns, same_video_negatives=(v_neg, t_neg, verbs, nouns))
    assert shared.item() < doubled.item()
    with pytest.raises(ValueError, match="batch sizes differ"):
        ego_nce(v, t, verbs[:2], nouns)


def test_max_margin_by_hand():
    S = torch.tensor([[0.5, 0.4], [0.1, 0.9]])
    # terms: relu(.2 - (.5 - .4)) = .1, relu(.2 - (.5 - .1)) = 0, and both of row 1 are 0
    assert max_margin(S, margin=0.2).item() == pytest.approx(0.1 / 4)
    # adaptive: pair 0's margin doubles to .4 -> .3 and 0; pair 1 unchanged
    adaptive = max_margin(S, margin=0.2, weights=torch.tensor([2.0, 1.0]))
    assert adaptive.item() == pytest.approx(0.3 / 4)
    assert max_margin(torch.eye(3), margin=0.2).item() == 0.0  # separated by more than m
    with pytest.raises(ValueError, match="square"):
        max_margin(torch.zeros(2, 3))


def test_sample_positive_captions_draws_above_threshold_or_falls_back():
    relevancy = np.array(
        [
            [1.0, 0.1, 0.5, 0.0],  # 0.1 is not above the threshold
            [0.0, 0.05, 0.0, 0.1],  # nothing above: own caption
            [0.0, 0.0, 0.0, 0.2],
        ]
    )
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices, weights = sample_positive_captions(relevancy, threshold=0.1, rng=rng)
        seen.add(int(indices[0]))
        assert weights[0] == relevancy[0, indices[0]]
        assert indices[1] == OWN_CAPTION and weights[1] == 1.0
        assert indices[2] == 3 and weights[2] == pytest.approx(0.2)
    assert seen == {0, 2}
    again = sample_positive_captions(relevancy, rng=np.random.default_rng(3))
    assert np.array_equal(
        again[0], sample_positive_captions(relevancy, rng=np.random.default_rng(3))[0]
    )


def test_scene_negatives_come_from_the_same_video_chunk():
    videos = ["a", "a", "a", "b", "b", "c"]
    times = [1.0, 30.0, 61.0, 5.0, 6.0, 3.0]
    for seed in range(10):
        picked = scene_negative_indices(
            videos, times, chunk_sec=60, rng=np.random.default_rng(seed)
        )
        assert picked[0] == 1 and picked[1] == 0  # chunk (a, 0) has two clips
        assert picked[3] == 4 and picked[4] == 3
        assert picked[2] != 2 and picked[5] != 5  # alone in their chunk: any other clip


def test_dual_softmax_matches_its_definition():
    S = torch.tensor([[2.0, 1.0, 0.0], [0.5, 3.0, 1.0]])
    first = torch.exp(S / 500) / torch.exp(S / 500).sum(dim=1, keepdim=True) * S
    expected = torch.exp(first) / torch.exp(first).sum(dim=0, keepdim=True)
    result = dual_softmax(S)
    assert torch.allclose(result, expected)
    assert torch.allclose(result.sum(dim=0), torch.ones(3))


def test_cosine_similarity_matrix():
    a = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0]])
    sim = cosine_similarity_matrix(a, b)
    assert sim[0, 0].item() == pytest.approx(math.sqrt(0.5)) and sim[1, 0].item() == 0.0


def toy_pairs(n, generator, latent=16, video_dim=48, text_dim=40, frames=4):
    """Video and text features that are two different noisy linear views of one latent."""
    to_video = torch.randn(latent, video_dim, generator=torch.Generator().manual_seed(100))
    to_text = torch.randn(latent, text_dim, generator=torch.Generator().manual_seed(101))
    z = torch.randn(n, latent, generator=generator)
    video = (z @ to_video)[:, None] + torch.randn(n, frames, video_dim, generator=generator)
    text = z @ to_text + torch.randn(n, text_dim, generator=generator)
    return video, text, (z[:, 0] > 0).long(), (z[:, 1] > 0).long()


@pytest.mark.parametrize("loss_name", ["info_nce", "ego_nce", "max_margin"])
def test_training_a_projector_learns_retrieval(loss_name):
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    train, test = toy_pairs(1024, generator), toy_pairs(200, generator)
    torch.manual_seed(0)
    model = RetrievalProjector(48, 40, 32)

    def recall_at_1():
        with torch.no_grad():
            v, t = model(test[0], test[1])
        return ((v @ t.T).argmax(dim=1) == torch.arange(200)).float().mean().item()

    assert recall_at_1() < 0.05  # chance is 1/200
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        rows = torch.randint(1024, (128,), generator=generator)
        v, t = model(train[0][rows], train[1][rows])
        if loss_name == "info_nce":
            loss = info_nce(v, t)
        elif loss_name == "ego_nce":
            loss = ego_nce(v, t, train[2][rows], train[3][rows])
        else:
            loss = max_margin(v @ t.T)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert recall_at_1() > 0.9
