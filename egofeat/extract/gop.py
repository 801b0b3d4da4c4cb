"""The decode planner: which packets to decode, from where, for a set of wanted frames.

A coded video can only be entered at a keyframe: showing frame ``f`` costs decoding every
packet from the keyframe before it (in decode order) up to ``f``'s own packet. Frames that share
a GOP share that cost. The union of those packet ranges over all wanted frames is the
**GOP-minimum** (:meth:`PacketIndex.gop_minimum`): no decoder that enters the stream at
keyframes can decode fewer packets.

:meth:`PacketIndex.plan` turns wanted frames into :class:`Run` s: seek to a keyframe, decode
packets up to the last wanted one, drain the decoder. Two ranges become one run when the
packets between them cost less than a seek (``seek_cost`` packets), so the packets a plan
decodes exceed the GOP-minimum by at most ``seek_cost`` per GOP boundary it decodes through.

Below the GOP-minimum: an H.264 picture whose slices all have ``nal_ref_idc == 0`` is
*disposable*, no other picture refers to it, so a run never feeds one to the decoder unless it
is wanted (:attr:`PacketIndex.disposable`). x264's default B-frames are mostly disposable.

Frames are numbered in *display order* (sorted presentation timestamps); packets in *decode
order* (file order). The index comes from demuxing the file once without decoding
(:meth:`PacketIndex.scan`): pts, keyframe flags, durations and the disposable flag of every
packet. That scan reads the compressed bytes, which costs about 1 % of decoding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

__all__ = ["PacketIndex", "Run"]


@dataclass(frozen=True)
class Run:
    """Decode packets ``first..last`` (decode order, inclusive) after seeking to ``first``
    (a keyframe, or packet 0), then drain the decoder."""

    first: int
    last: int

    @property
    def packets(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class PacketIndex:
    """Timestamps of every video packet of a file, in decode order.

    Attributes:
        pts: presentation timestamps in the stream's time base (int64, decode order).
        keyframe: whether each packet is a keyframe (a point the decoder can start from).
        duration: each packet's duration in the time base (0 when the container has none).
        complete: False when the demuxer stopped with an error before the end of the file.
        disposable: whether no other picture refers to each packet's (H.264 ``nal_ref_idc``
            0 in all its slices); all False when unknown.
    """

    pts: np.ndarray
    keyframe: np.ndarray
    duration: np.ndarray
    complete: bool = True
    disposable: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.disposable is None:
            object.__setattr__(self, "disposable", np.zeros(self.pts.size, bool))
        # Display order: stable, so packets with equal pts (a broken file) keep file order.
        order = np.argsort(self.pts, kind="stable")
        object.__setattr__(self, "_display_to_decode", order)
        keys = np.flatnonzero(self.keyframe)
        object.__setattr__(self, "_keyframes", keys)

    @classmethod
    def scan(cls, container: av.container.InputContainer, stream: av.video.stream.VideoStream
             ) -> PacketIndex:
        """Demux ``stream`` from the start without decoding; rewinds the container after.

        Packets without a pts take their dts. Raises ``ValueError`` when some packet has
        neither (a raw elementary stream): such a file has no frame times.
        """
        pts, keys, durations, disposable = [], [], [], []
        nal_length = _h264_nal_length(stream)
        complete = True
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise ValueError("the stream's packets carry no timestamps")
                pts.append(stamp)
                keys.append(packet.is_keyframe)
                durations.append(packet.duration or 0)
                disposable.append(nal_length is not None and not packet.is_keyframe
                                  and _h264_disposable(memoryview(packet), nal_length))
        except av.FFmpegError:  # a corrupt tail: what was read before it is still an index
            complete = False
        container.seek(0)
        return cls(np.asarray(pts, np.int64), np.asarray(keys, bool),
                   np.asarray(durations, np.int64), complete, np.asarray(disposable, bool))

    def __len__(self) -> int:
        return int(self.pts.size)

    @property
    def display_pts(self) -> np.ndarray:
        """Presentation timestamps in display order (sorted)."""
        return self.pts[self._display_to_decode]

    def decode_position(self, frames: np.ndarray) -> np.ndarray:
        """Decode-order packet index of display-order frames."""
        return self._display_to_decode[np.asarray(frames, np.int64)]

    def entry_point(self, packets: np.ndarray) -> np.ndarray:
        """The keyframe to start decoding from for each packet (decode order; 0 if none).

        The keyframe at or before the packet in decode order whose pts is not after the
        packet's: in an open GOP, pictures decoded after a keyframe but shown before it need
        the GOP before.
        """
        packets = np.asarray(packets, np.int64)
        keys = self._keyframes
        if keys.size == 0:
            return np.zeros_like(packets)
        position = np.searchsorted(keys, packets, side="right") - 1
        for i in np.flatnonzero(position >= 0):
            while position[i] >= 0 and self.pts[keys[position[i]]] > self.pts[packets[i]]:
                position[i] -= 1
        return np.where(position >= 0, keys[np.maximum(position, 0)], 0)

    def _ranges(self, frames: np.ndarray) -> Iterator[tuple[int, int]]:
        """Merged ``[entry, packet]`` ranges (decode order) of display-order ``frames``."""
        packets = self.decode_position(np.unique(frames))
        if packets.size == 0:
            return
        starts = self.entry_point(packets)
        order = np.lexsort((packets, starts))
        first, last = int(starts[order[0]]), int(packets[order[0]])
        for start, stop in zip(starts[order[1:]].tolist(), packets[order[1:]].tolist(),
                               strict=True):
            if start <= last + 1:
                last = max(last, stop)
            else:
                yield first, last
                first, last = start, stop
        yield first, last

    def gop_minimum(self, frames: np.ndarray) -> int:
        """Packets any keyframe-entry decoder must decode to show display-order ``frames``."""
        return sum(last - first + 1 for first, last in self._ranges(frames))

    def plan(self, frames: np.ndarray, seek_cost: int = 1) -> list[Run]:
        """Runs that decode display-order ``frames``: each GOP once, nothing after the last
        wanted packet of a run, and decode-through instead of a seek when at most
        ``seek_cost`` unwanted packets lie between two ranges."""
        runs: list[Run] = []
        for first, last in self._ranges(frames):
            if runs and first - runs[-1].last - 1 <= seek_cost:
                runs[-1] = Run(runs[-1].first, last)
            else:
                runs.append(Run(first, last))
        return runs


# ---- H.264 reference flags -------------------------------------------------------------------

_VCL_TYPES = (1, 5)  # coded slice of a non-IDR / IDR picture


def _h264_nal_length(stream: av.video.stream.VideoStream) -> int | None:
    """Bytes of the NAL length prefix of an AVCC H.264 stream (MP4, MKV), 0 for Annex B
    (start codes: MPEG-TS, raw), None for other codecs."""
    if stream.codec_context.name != "h264":
        return None
    extradata = stream.codec_context.extradata or b""
    if len(extradata) >= 5 and extradata[0] == 1:  # an avcC record
        return (extradata[4] & 3) + 1
    return 0


def _h264_disposable(payload: memoryview, nal_length: int) -> bool:
    """Whether every slice of an H.264 access unit has ``nal_ref_idc == 0``.

    Anything unexpected (no slice found, a truncated unit) counts as not disposable: the
    packet is then decoded, which is always correct.
    """
    headers = _avcc_headers(payload, nal_length) if nal_length else _annexb_headers(bytes(payload))
    slices = [header for header in headers if header & 0x1F in _VCL_TYPES]
    return bool(slices) and all(header & 0x60 == 0 for header in slices)


def _avcc_headers(payload: memoryview, nal_length: int) -> list[int]:
    headers, position = [], 0
    while position + nal_length < len(payload):
        size = int.from_bytes(payload[position : position + nal_length], "big")
        if size == 0 or position + nal_length + size > len(payload):
            return []  # malformed: decode it
        headers.append(payload[position + nal_length])
        position += nal_length + size
    return headers


def _annexb_headers(payload: bytes) -> list[int]:
    headers, position = [], payload.find(b"\0\0\1")
    while position >= 0 and position + 3 < len(payload):
        headers.append(payload[position + 3])
        position = payload.find(b"\0\0\1", position + 3)
    return headers
