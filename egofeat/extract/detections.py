"""EPIC-KITCHENS-100 hand-object detections: the records, read without pickle code or protobuf.

The EPIC-100 hand-object release has one pickle per video holding a python ``list`` of
``bytes``: one serialized protobuf ``model.detections.Detections`` message per RGB frame,
in frame order (element ``i`` is frame ``i + 1``). This module reads it

- without running pickle code: :func:`load_detection_payloads` unpickles with the restricted
  unpickler, admitting only plain containers and bytes, and
- without the EPIC library or a protobuf runtime: a small proto3 wire-format decoder for the
  published schema (:func:`decode_detections`).

Boxes are ``(left, top, right, bottom)`` normalized to ``[0, 1]`` of the frame's width/height.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from egofeat._util.safe_pickle import restricted_load

__all__ = [
    "BBox",
    "FrameDetections",
    "HandDetection",
    "HandSide",
    "HandState",
    "ObjectDetection",
    "ProtoDecodeError",
    "decode_detections",
    "load_detection_payloads",
]

FULL_FRAME = (0.0, 0.0, 1.0, 1.0)
"""The whole frame as a normalized box."""


class HandState(IntEnum):
    NO_CONTACT = 0
    SELF_CONTACT = 1
    ANOTHER_PERSON = 2
    PORTABLE_OBJECT = 3
    STATIONARY_OBJECT = 4


class HandSide(IntEnum):
    LEFT = 0
    RIGHT = 1


@dataclass(frozen=True)
class BBox:
    """An axis-aligned box ``(left, top, right, bottom)``, normalized unless stated otherwise."""

    left: float
    top: float
    right: float
    bottom: float

    @classmethod
    def full(cls) -> BBox:
        """The whole frame."""
        return cls(*FULL_FRAME)

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def center(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)

    def scaled(self, sx: float, sy: float) -> BBox:
        """The box with x multiplied by ``sx`` and y by ``sy`` (e.g. to pixels)."""
        return BBox(self.left * sx, self.top * sy, self.right * sx, self.bottom * sy)

    def union(self, other: BBox) -> BBox:
        return BBox(
            min(self.left, other.left),
            min(self.top, other.top),
            max(self.right, other.right),
            max(self.bottom, other.bottom),
        )

    def expanded(self, margin: float) -> BBox:
        """Grow each side by ``margin`` times the box's width (x) or height (y)."""
        dx, dy = margin * self.width, margin * self.height
        return BBox(self.left - dx, self.top - dy, self.right + dx, self.bottom + dy)

    def clamped(self, width: float = 1.0, height: float = 1.0) -> BBox:
        """The box cut to ``[0, width] x [0, height]``."""
        left, right = min(max(self.left, 0.0), width), min(max(self.right, 0.0), width)
        top, bottom = min(max(self.top, 0.0), height), min(max(self.bottom, 0.0), height)
        return BBox(left, top, max(left, right), max(top, bottom))

    def squared(self, width: float = 1.0, height: float = 1.0) -> BBox:
        """The smallest square around the box, shifted inside ``[0, width] x [0, height]``.

        Coordinates are in the units of ``width``/``height`` (pixels, so that "square" means
        square on screen). A side longer than the image's short side is capped there, so a box
        wider than the image is tall loses its ends rather than the crop leaving the image.
        """
        side = min(max(self.width, self.height), width, height)
        cx, cy = self.center
        left = min(max(cx - side / 2, 0.0), width - side)
        top = min(max(cy - side / 2, 0.0), height - side)
        return BBox(left, top, left + side, top + side)


@dataclass(frozen=True)
class HandDetection:
    bbox: BBox
    score: float
    state: HandState | int
    object_offset: tuple[float, float]
    side: HandSide | int


@dataclass(frozen=True)
class ObjectDetection:
    bbox: BBox
    score: float


@dataclass(frozen=True)
class FrameDetections:
    """The detections of one frame (the ``Detections`` message)."""

    video_id: str
    frame_number: int
    hands: tuple[HandDetection, ...] = ()
    objects: tuple[ObjectDetection, ...] = ()


# ---------------------------------------------------------------------------------------------
# proto3 wire format
# ---------------------------------------------------------------------------------------------

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class ProtoDecodeError(ValueError):
    """A payload is not a valid ``Detections`` message."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ProtoDecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoDecodeError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)``: ints for varints, raw bytes otherwise."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire in (_FIXED32, _FIXED64, _LENGTH):
            if wire == _LENGTH:
                size, pos = _read_varint(buf, pos)
            else:
                size = 4 if wire == _FIXED32 else 8
            value, pos = buf[pos : pos + size], pos + size
            if pos > end:
                raise ProtoDecodeError(f"field {number} runs past the end of the message")
        else:
            raise ProtoDecodeError(f"field {number} has unsupported wire type {wire}")
        yield number, wire, value


def _expect(number: int, wire: int, expected: int, message: str) -> bool:
    """True when a known field has its schema's wire type; unknown wire types are an error."""
    if wire != expected:
        raise ProtoDecodeError(
            f"{message} field {number} has wire type {wire}, expected {expected}"
        )
    return True


def _float(value: bytes) -> float:
    return struct.unpack("<f", value)[0]


def _int32(value: int) -> int:
    # Negative int32 values are sign-extended to 64 bits on the wire.
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >> 63 else value


def _decode_bbox(buf: bytes) -> BBox:
    coords = [0.0, 0.0, 0.0, 0.0]
    for number, wire, value in _fields(buf):
        if 1 <= number <= 4 and _expect(number, wire, _FIXED32, "BBox"):
            coords[number - 1] = _float(value)
    return BBox(*coords)


def _decode_vector(buf: bytes) -> tuple[float, float]:
    xy = [0.0, 0.0]
    for number, wire, value in _fields(buf):
        if number in (1, 2) and _expect(number, wire, _FIXED32, "FloatVector"):
            xy[number - 1] = _float(value)
    return (xy[0], xy[1])


def _enum(enum: type[IntEnum], value: int) -> IntEnum | int:
    # proto3 enums are open: keep values this schema does not name.
    try:
        return enum(value)
    except ValueError:
        return _int32(value)


def _decode_hand(buf: bytes) -> HandDetection:
    bbox, score, state, offset, side = BBox(0, 0, 0, 0), 0.0, 0, (0.0, 0.0), 0
    for number, wire, value in _fields(buf):
        if number == 1 and _expect(number, wire, _LENGTH, "HandDetection"):
            bbox = _decode_bbox(value)
        elif number == 2 and _expect(number, wire, _FIXED32, "HandDetection"):
            score = _float(value)
        elif number == 3 and _expect(number, wire, _VARINT, "HandDetection"):
            state = value
        elif number == 4 and _expect(number, wire, _LENGTH, "HandDetection"):
            offset = _decode_vector(value)
        elif number == 5 and _expect(number, wire, _VARINT, "HandDetection"):
            side = value
    return HandDetection(bbox, score, _enum(HandState, state), offset, _enum(HandSide, side))


def _decode_object(buf: bytes) -> ObjectDetection:
    bbox, score = BBox(0, 0, 0, 0), 0.0
    for number, wire, value in _fields(buf):
        if number == 1 and _expect(number, wire, _LENGTH, "ObjectDetection"):
            bbox = _decode_bbox(value)
        elif number == 2 and _expect(number, wire, _FIXED32, "ObjectDetection"):
            score = _float(value)
    return ObjectDetection(bbox, score)


def decode_detections(payload: bytes) -> FrameDetections:
    """Decode one serialized ``model.detections.Detections`` message (unknown fields skipped)."""
    video_id, frame_number, hands, objects = "", 0, [], []
    for number, wire, value in _fields(payload):
        if number == 1 and _expect(number, wire, _LENGTH, "Detections"):
            try:
                video_id = value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ProtoDecodeError(f"Detections.video_id is not UTF-8: {error}") from None
        elif number == 2 and _expect(number, wire, _VARINT, "Detections"):
            frame_number = _int32(value)
        elif number == 3 and _expect(number, wire, _LENGTH, "Detections"):
            hands.append(_decode_hand(value))
        elif number == 4 and _expect(number, wire, _LENGTH, "Detections"):
            objects.append(_decode_object(value))
    return FrameDetections(video_id, frame_number, tuple(hands), tuple(objects))


# ---------------------------------------------------------------------------------------------
# the pickle container
# ---------------------------------------------------------------------------------------------


#: Python 3 writes bytes under pickle protocols 0-2 as ``_codecs.encode(str, "latin1")``: a pure
#: data conversion, so it is the one global a hand-object pickle (a list of bytes) may name.
_DETECTION_GLOBALS = {"_codecs.encode": codecs.encode}


def load_detection_payloads(path: str | Path) -> list[bytes]:
    """The per-frame serialized messages of an EPIC hand-object pickle, without running code."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"hand-object detections file {path} does not exist") from None
    try:
        payloads = restricted_load(data, _DETECTION_GLOBALS, source=str(path),
                                   allowed_what="needed by a hand-object pickle (a list of bytes)")
    except Exception as error:  # any malformed or hostile pickle
        raise ValueError(f"cannot read hand-object detections {path}: {error}") from None
    if not isinstance(payloads, list) or not all(
        isinstance(item, bytes | bytearray) for item in payloads
    ):
        raise ValueError(
            f"hand-object detections {path} must hold a list of bytes (one serialized "
            f"Detections message per frame), found {type(payloads).__name__}"
        )
    return [bytes(item) for item in payloads]
