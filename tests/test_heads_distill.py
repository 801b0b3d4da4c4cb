"""Distillation loss, teacher ensembles and their weighting, and a synthetic distillation task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from egofeat.heads.distill import (
    dataset_weights,
    distillation_loss,
    ensemble_logits,
    kd_kl,
    per_sample_weights,
)

LN3 = math.log(3.0)


def test_kl_term_by_hand():
    student = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    teacher = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    # row 0: KL([3/4, 1/4] || [1/2, 1/2]); row 1: KL([1/2, 1/2] || [3/4, 1/4])
    row0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    row1 = 0.5 * math.log(2 / 3) + 0.5 * math.log(2.0)
    assert kd_kl(student, teacher).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_kl_term_at_temperature_two_is_scaled_by_t_squared():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[LN3, 0.0]])
    # softmax([ln 3 / 2, 0]) = [sqrt 3, 1] / (sqrt 3 + 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert kd_kl(student, teacher, temperature=2.0).item() == pytest.approx(4 * kl, rel=1e-5)


def test_kl_term_is_zero_for_matching_logits_and_teacher_gets_no_gradient():
    logits = torch.randn(4, 5)
    assert kd_kl(logits, logits + 3.0).item() == pytest.approx(0.0, abs=1e-6)
    teacher = torch.randn(4, 5, requires_grad=True)
    student = torch.randn(4, 5, requires_grad=True)
    kd_kl(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None


def test_distillation_loss_averages_tasks_and_adds_the_ground_truth_term():
    student = {"verb": torch.tensor([[0.0, 0.0]]), "noun": torch.tensor([[LN3, 0.0, 0.0]])}
    teacher = {"verb": torch.tensor([[LN3, 0.0]]), "noun": torch.tensor([[LN3, 0.0, 0.0]])}
    labels = {"verb": torch.tensor([1]), "noun": torch.tensor([0])}
    verb_kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert distillation_loss(student, teacher).item() == pytest.approx(verb_kl / 2, rel=1e-5)
    # CE: verb -log(1/2); noun -log(3/5)
    verb_ce, noun_ce = math.log(2.0), -math.log(0.6)
    loss = distillation_loss(student, teacher, labels, w_distill=0.5, w_gt=2.0)
    expected = (0.5 * verb_kl + 2.0 * verb_ce + 2.0 * noun_ce) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    only_nouns = distillation_loss(student, teacher, labels, w_gt=1.0, tasks=("noun",))
    assert only_nouns.item() == pytest.approx(noun_ce, rel=1e-5)


def test_unlabelled_rows_are_skipped():
    student = {"verb": torch.tensor([[0.0, 0.0], [5.0, 0.0]])}
    labels = {"verb": torch.tensor([1, -1])}
    loss = distillation_loss(student, student, labels, w_distill=0.0, w_gt=1.0, tasks=("verb",))
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-5)
    weights = per_sample_weights(teachers(), labels)["verb"]
    assert torch.allclose(weights[1], torch.tensor([0.5, 0.5]))  # no label: no preference
    calibrated = dataset_weights(teachers(), labels)["verb"]
    assert torch.allclose(calibrated, per_sample_weights(teachers(), labels)["verb"][0])
    with pytest.raises(ValueError, match="no labelled 'verb' rows"):
        dataset_weights(teachers(), {"verb": torch.tensor([-1, -1])})


def test_distillation_loss_errors_name_the_problem():
    student = {"verb": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="needs labels"):
        distillation_loss(student, student, w_gt=1.0, tasks=("verb",))
    with pytest.raises(KeyError, match="'noun'"):
        distillation_loss(student, student)
    with pytest.raises(ValueError, match="same batch and class count"):
        distillation_loss(student, {"verb": torch.zeros(2, 4)}, tasks=("verb",))


def teachers() -> list[dict[str, torch.Tensor]]:
    return [
        {"verb": torch.tensor([[4.0, 0.0], [0.0, 2.0]])},
        {"verb": torch.tensor([[0.0, 2.0], [0.0, 0.0]])},
    ]


def test_ensemble_is_a_weighted_average_of_logits():
    uniform = ensemble_logits(teachers())["verb"]
    assert torch.allclose(uniform, torch.tensor([[2.0, 1.0], [0.0, 1.0]]))
    fixed = ensemble_logits(teachers(), weights=[3.0, 1.0])["verb"]  # normalized to 3/4, 1/4
    assert torch.allclose(fixed, torch.tensor([[3.0, 0.5], [0.0, 1.5]]))
    per_sample = ensemble_logits(teachers(), weights=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(per_sample["verb"], torch.tensor([[4.0, 0.0], [0.0, 0.0]]))
    per_task = ensemble_logits(teachers(), weights={"verb": torch.tensor([0.0, 1.0])})
    assert torch.allclose(per_task["verb"], teachers()[1]["verb"])


def test_ensemble_rejects_bad_weights():
    with pytest.raises(ValueError, match="do not fit 2 teachers"):
        ensemble_logits(teachers(), weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        ensemble_logits(teachers(), weights=[1.0, -1.0])
    with pytest.raises(KeyError, match=r"teacher_logits\[1\]"):
        ensemble_logits([teachers()[0], {"noun": torch.zeros(2, 2)}])
    with pytest.raises(ValueError, match="no teachers"):
        ensemble_logits([])
    with pytest.raises(KeyError, match="weights has no entry for task 'verb'"):
        ensemble_logits(teachers(), weights={"noun": torch.tensor([1.0, 1.0])})


def test_per_sample_weights_favour_the_teacher_that_is_right():
    labels = {"verb": torch.tensor([0, 1])}
    weights = per_sample_weights(teachers(), labels, tau_w=1.0)["verb"]
    ce = torch.stack(
        [F.cross_entropy(t["verb"], labels["verb"], reduction="none") for t in teachers()], dim=-1
    )
    assert torch.allclose(weights, torch.softmax(-ce, dim=-1))
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    assert weights[0, 0] > 0.85  # sample 0: teacher 0 is confidently right, teacher 1 wrong
    assert weights[1, 0] > weights[1, 1]  # sample 1: teacher 0 right, teacher 1 undecided
    sharper = per_sample_weights(teachers(), labels, tau_w=0.1)["verb"]
    assert sharper[1, 0] > weights[1, 0]


def test_dataset_weights_softmin_the_mean_loss():
    labels = {"verb": torch.tensor([0, 1])}
    weights = dataset_weights(teachers(), labels, tau_w=2.0)["verb"]
    mean_ce = torch.tensor([F.cross_entropy(t["verb"], labels["verb"]).item() for t in teachers()])
    assert weights.shape == (2,)
    assert torch.allclose(weights, torch.softmax(-mean_ce / 2.0, dim=0))
    fused = ensemble_logits(teachers(), {"verb": weights})["verb"]
    expected = weights[0] * teachers()[0]["verb"] + weights[1] * teachers()[1]["verb"]
    assert torch.allclose(fused, expected)


def fit_linear(features, loss_fn, classes, epochs=150, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(epochs):
        loss = loss_fn(model(features))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_distilled_student_beats_the_ground_truth_student():
    """A teacher that sees more of the signal makes a better teacher than the labels themselves.

    Labels are drawn from ``softmax(W x)`` over 8 classes for a 32-d latent ``x``, so they are
    intrinsically noisy. The teacher's stream is all of ``x`` (a linear head fitted on 4,000
    samples); the student's stream is the first 24 dims, and it has only 120 labelled samples.
    A calibrated teacher's probabilities are the expected label given what it sees — a
    lower-variance target than the sampled one-hot labels (Rao-Blackwellization) — so the
    distilled student (pure KD, T=2) should generalize clearly better than the cross-entropy
    student trained on the same 120 samples. Over 8 seeds the gain was 0.11-0.19 top-1.
    """
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    classes, dim, student_dim = 8, 32, 24
    weights = torch.randn(classes, dim, generator=generator) * 3.0 / dim**0.5

    def sample(n):
        x = torch.randn(n, dim, generator=generator)
        probs = torch.softmax(x @ weights.T, dim=1)
        return x, torch.multinomial(probs, 1, generator=generator).squeeze(1)

    x, y = sample(4000)
    x_test, y_test = sample(5000)
    teacher = fit_linear(x, lambda z: F.cross_entropy(z, y), classes)
    student_x, student_y = x[:120, :student_dim], y[:120]
    teacher_logits = {"verb": teacher(x[:120]).detach()}

    ce_student = fit_linear(student_x, lambda z: F.cross_entropy(z, student_y), classes)
    kd_student = fit_linear(
        student_x,
        lambda z: distillation_loss({"verb": z}, teacher_logits, temperature=2.0, tasks=("verb",)),
        classes,
    )

    def accuracy(model, features):
        return (model(features).argmax(1) == y_test).float().mean().item()

    ce_accuracy = accuracy(ce_student, x_test[:, :student_dim])
    kd_accuracy = accuracy(kd_student, x_test[:, :student_dim])
    assert accuracy(teacher, x_test) > kd_accuracy
    assert kd_accuracy > ce_accuracy + 0.06, (kd_accuracy, ce_accuracy)
