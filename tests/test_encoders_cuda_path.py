"""The CUDA path of :class:`~egofeat.extract.encoders.base.Encoder`, with CUDA mocked out.

No GPU here: streams and events are fakes that log what is ordered on which stream, pinned
memory is plain memory, and the tiny encoder computes on the CPU. What is checked is the
logic: features equal the plain path's, each batch's copy is ordered before its compute and
after the compute that last used its buffer, the next batch is staged while the current one
computes, batch sizes come from free device memory, and a compiled forward pass always sees
full batches.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from egofeat.extract.encoders import create_encoder
from egofeat.extract.encoders.base import Encoder, auto_batch_size
from egofeat.extract.encoders.preprocess import ImagePreprocess


class FakeEvent:
    count = 0

    def __init__(self, log: list[str]) -> None:
        self.log, self.name = log, f"e{FakeEvent.count}"
        FakeEvent.count += 1
        self.stream: FakeStream | None = None

    def record(self, stream: FakeStream) -> None:
        self.stream = stream
        self.log.append(f"{stream.name} records {self.name}")

    def synchronize(self) -> None:
        self.log.append(f"host waits {self.name}")


class FakeStream:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def wait_event(self, event: FakeEvent) -> None:
        self.log.append(f"{self.name} waits {event.name}")

    def synchronize(self) -> None:
        self.log.append(f"host waits {self.name}")


@pytest.fixture
def fake_cuda(monkeypatch):
    log: list[str] = []
    FakeEvent.count = 0
    compute = FakeStream("compute", log)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream("copy", log))
    monkeypatch.setattr(torch.cuda, "Event", lambda: FakeEvent(log))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: compute)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
    return log


def frames(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 48, 64, 3), dtype=np.uint8)


def test_overlapped_batches_give_the_plain_features_and_order_copies_around_compute(fake_cuda):
    encoder = create_encoder("tiny", batch_size=4)
    expected = encoder.encode(frames(10))  # the plain CPU path
    features = encoder._encode_overlapped(torch.from_numpy(frames(10)))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    log = fake_cuda
    # events: e0/e1 "copied" per buffer, e2/e3 "consumed" per buffer
    assert log == [
        "host waits e0", "copy waits e2", "copy records e0",  # batch 0 staged in buffer 0
        "compute waits e0", "compute records e2",  # batch 0 computed
        "host waits e1", "copy waits e3", "copy records e1",  # batch 1 staged meanwhile
        "compute waits e1", "compute records e3",
        # batch 2 reuses buffer 0: after its last copy left the host, after batch 0 computed
        "host waits e0", "copy waits e2", "copy records e0",
        "compute waits e0", "compute records e2",
        "host waits compute",  # one synchronisation per call
    ]


def test_pinned_buffers_are_kept_across_calls_of_one_shape(fake_cuda):
    encoder = create_encoder("tiny", batch_size=4)
    encoder._encode_overlapped(torch.from_numpy(frames(5)))
    first = encoder._staging[(4, 48, 64, 3)]
    encoder._encode_overlapped(torch.from_numpy(frames(3)))
    assert encoder._staging[(4, 48, 64, 3)] is first


def test_batch_size_comes_from_free_device_memory(monkeypatch):
    cuda, per_sample = torch.device("cuda"), 3 * 224 * 224 * 4 * 64
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (80 * 2**30, 80 * 2**30))
    assert auto_batch_size(cuda, 3 * 224 * 224) == 80 * 2**30 // 4 // per_sample == 557
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**40, 2**40))
    assert auto_batch_size(cuda, 3 * 224 * 224) == 1024  # the cap
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**20, 80 * 2**30))
    assert auto_batch_size(cuda, 3 * 224 * 224) == 1  # nearly full: one at a time


def test_a_compiled_forward_pass_sees_only_full_batches():
    encoder = create_encoder("tiny", batch_size=4)
    expected = encoder.encode(frames(6))
    encoder.compile(backend="eager")
    seen: list[int] = []
    forward = encoder._forward
    encoder._forward = lambda pixels: seen.append(pixels.shape[0]) or forward(pixels)
    np.testing.assert_allclose(encoder.encode(frames(6)), expected, rtol=1e-5, atol=1e-6)
    assert seen == [4, 4]  # the last batch of 2 was padded to 4, its padding dropped


class _ConvEncoder(Encoder):
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels).mean(dim=(2, 3, 4))


def test_on_cuda_only_2d_convolutions_turn_channels_last(monkeypatch):
    # "cuda" is mocked: moving a module there moves it to the CPU, free memory is 80 GB.
    original = torch.nn.Module.to

    def to(self, *args, **kwargs):
        args = tuple("cpu" if str(a).startswith("cuda") else a for a in args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (80 * 2**30, 80 * 2**30))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(4, 4, 1))
    preprocessing = ImagePreprocess(16, 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    _ConvEncoder(name="conv", model=model, preprocessing=preprocessing, dim=4, output="test",
                 device="cuda")
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    assert model[1].weight.dim() == 5 and model[1].weight.is_contiguous()  # left as it was
