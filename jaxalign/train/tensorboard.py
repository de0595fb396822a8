"""A dependency-free TensorBoard scalar writer (and reader, for tests).

TensorBoard reads ``events.out.tfevents.*`` files: a sequence of TFRecords (length,
masked CRC-32C of the length, payload, masked CRC-32C of the payload), each payload an
``Event`` protocol buffer. Scalars need only a handful of protobuf fields, encoded here by
hand, so runs get TensorBoard curves without installing TensorFlow or tensorboardX:

* ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string),
  ``summary`` (5, message);
* ``Summary``: repeated ``value`` (1, message);
* ``Summary.Value``: ``tag`` (1, string), ``simple_value`` (2, float).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf does
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint((number << 3) | wire) + payload


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def _event(step: int, *, wall_time: float, summary: bytes = b"", file_version: str = "") -> bytes:
    msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version:
        msg += _bytes_field(3, file_version.encode())
    if summary:
        msg += _bytes_field(5, summary)
    return msg


def _scalar_summary(scalars: Mapping[str, float]) -> bytes:
    values = b""
    for tag, value in scalars.items():
        v = _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(value)))
        values += _bytes_field(1, v)
    return values


class SummaryWriter:
    """Appends scalar events to a new ``events.out.tfevents.*`` file under ``logdir``."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"
        self.path = self.logdir / name
        self._file = self.path.open("ab")
        self._write(_event(0, wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, payload: bytes) -> None:
        header = struct.pack("<Q", len(payload))
        self._file.write(header + struct.pack("<I", _masked_crc(header)))
        self._file.write(payload + struct.pack("<I", _masked_crc(payload)))
        self._file.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One event holding every scalar of ``values`` at ``step``."""
        finite = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        if finite:
            self._write(_event(int(step), wall_time=time.time(), summary=_scalar_summary(finite)))

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------------
# Reading (tests and quick inspection).


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _parse(buf: bytes) -> Iterator[tuple[int, int, object]]:
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in an event file; checks both CRCs per record."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8 : pos + 12])[0] != _masked_crc(header):
            raise ValueError(f"{path}: corrupt record header at byte {pos}")
        payload = data[pos + 12 : pos + 12 + length]
        crc = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0]
        if crc != _masked_crc(payload):
            raise ValueError(f"{path}: corrupt record payload at byte {pos}")
        pos += 16 + length
        step = 0
        for number, _, value in _parse(payload):
            if number == 2:
                step = value
            elif number == 5:
                for _, _, val in _parse(value):
                    fields = {n: v for n, _, v in _parse(val)}
                    out.append((step, fields[1].decode(), struct.unpack("<f", fields[2])[0]))
    return out


__all__ = ["SummaryWriter", "crc32c", "read_scalars"]
