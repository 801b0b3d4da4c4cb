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

Frames are numbered in *display order* (sorted presentation timestamps); packets in *decode
order* (file order). The index comes from demuxing the file once without decoding
(:meth:`PacketIndex.scan`): pts, keyframe flags and durations of every packet. That scan reads
the compressed bytes, which costs about 1 % of decoding them.
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
    """

    pts: np.ndarray
    keyframe: np.ndarray
    duration: np.ndarray
    complete: bool = True

    def __post_init__(self) -> None:
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
        pts, keys, durations = [], [], []
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
        except av.FFmpegError:  # a corrupt tail: what was read before it is still an index
            complete = False
        container.seek(0)
        return cls(np.asarray(pts, np.int64), np.asarray(keys, bool),
                   np.asarray(durations, np.int64), complete)

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
