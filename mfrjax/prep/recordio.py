"""insightface's MXNet RecordIO face sets (`train.rec` + `train.idx`), read and written
with `struct` and NumPy only - no MXNet.

Layout of `.rec`: a sequence of records, each
    uint32 magic 0xced7230a | uint32 (cflag << 29 | length) | payload | zero padding to 4
(cflag 0 = a whole record; 1/2/3 = first/middle/last part of one split across records).
A payload starts with the image-record header `IfQQ` = (flag, label, id, id2); when
flag > 0, `flag` float32 labels follow it. The rest is the encoded image (JPEG/PNG).
`.idx` is text: `<record index>\\t<byte offset>` per line.

insightface's convention (what `load_rec` follows and `write_rec` writes):
  record 0      header, flag 2, labels (first identity record, end of identity records)
  1 .. N        images, label = class index
  N+1 .. N+C    one per class, labels (first image record, end image record)
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import numpy as np

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<IfQQ")


class RecordIOError(ValueError):
  """A malformed .rec/.idx; the message names the file, the record and its offset."""


class ImageRecord(NamedTuple):
  labels: tuple[float, ...]   # one label, or the flag > 0 label array
  image: bytes                # encoded image (may be empty for index records)
  id: int


def read_idx(path: str) -> dict[int, int]:
  """{record index: byte offset} from an .idx file."""
  out = {}
  with open(path, encoding="ascii") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        key, offset = line.split()
        out[int(key)] = int(offset)
      except ValueError as e:
        raise RecordIOError(f"{path}:{n}: expected '<index>\\t<offset>', got {line!r}") from e
  return out


def read_record(f, path: str, key: int, offset: int) -> bytes:
  """The payload of the record at `offset` (joining split parts)."""
  f.seek(offset)
  parts = []
  while True:
    head = f.read(8)
    if len(head) < 8:
      raise RecordIOError(f"{path}: record {key} at offset {offset}: file ends inside the "
                          "record header (truncated file?)")
    magic, lrec = struct.unpack("<II", head)
    if magic != MAGIC:
      raise RecordIOError(f"{path}: record {key} at offset {offset}: bad magic 0x{magic:08x} "
                          f"(expected 0x{MAGIC:08x}); the .idx does not match this .rec")
    cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
    data = f.read(length)
    if len(data) < length:
      raise RecordIOError(f"{path}: record {key} at offset {offset}: {len(data)} of {length} "
                          "bytes present (truncated file?)")
    f.read((4 - length % 4) % 4)
    parts.append(data)
    if cflag in (0, 3):
      return b"".join(parts)


def unpack(payload: bytes, path: str = "", key: int = -1) -> ImageRecord:
  """Splits a payload into header labels and image bytes."""
  if len(payload) < _HEADER.size:
    raise RecordIOError(f"{path}: record {key}: {len(payload)} bytes, shorter than the "
                        f"{_HEADER.size}-byte image header")
  flag, label, rid, _ = _HEADER.unpack_from(payload)
  rest = payload[_HEADER.size:]
  if flag > 0:
    if len(rest) < 4 * flag:
      raise RecordIOError(f"{path}: record {key}: header promises {flag} labels, "
                          f"{len(rest)} bytes follow")
    labels = tuple(np.frombuffer(rest[:4 * flag], "<f4").tolist())
    rest = rest[4 * flag:]
  else:
    labels = (label,)
  return ImageRecord(labels, rest, rid)


def pack(labels, image: bytes, rid: int = 0) -> bytes:
  labels = tuple(float(x) for x in np.atleast_1d(labels))
  if len(labels) == 1:
    return _HEADER.pack(0, labels[0], rid, 0) + image
  return (_HEADER.pack(len(labels), 0.0, rid, 0) + np.asarray(labels, "<f4").tobytes() + image)


class RecordReader:
  """Random access to a .rec through its .idx."""

  def __init__(self, rec_path: str, idx_path: str | None = None):
    self.path = rec_path
    idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
    for p in (rec_path, idx_path):
      if not os.path.exists(p):
        raise FileNotFoundError(f"{p} does not exist")
    self.offsets = read_idx(idx_path)
    self._f = open(rec_path, "rb")

  def __getitem__(self, key: int) -> ImageRecord:
    if key not in self.offsets:
      raise RecordIOError(f"{self.path}: no record {key} in the index")
    return unpack(read_record(self._f, self.path, key, self.offsets[key]), self.path, key)

  def close(self):
    self._f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def image_labels(reader: RecordReader) -> list[tuple[int, int]]:
  """(record index, class) of every image record, insightface convention or plain.

  With an insightface header (record 0, flag > 0) the images are records
  1 .. labels[0] - 1; otherwise every indexed record is an image.
  """
  keys = sorted(reader.offsets)
  head = reader[keys[0]] if keys else None
  if head is not None and keys[0] == 0 and len(head.labels) >= 2 and not head.image:
    keys = [k for k in keys if 1 <= k < int(head.labels[0])]
  return [(k, int(reader[k].labels[0])) for k in keys]


def write_rec(rec_path: str, images: list[tuple[int, bytes]]) -> None:
  """Writes (class, encoded image) items in insightface's layout (module docstring),
  with the .idx beside the .rec. Images of one class must be contiguous and classes
  numbered 0..C-1 in order."""
  classes = [c for c, _ in images]
  if classes != sorted(classes):
    raise ValueError("write_rec: images must be grouped by class, classes in order")
  n, n_cls = len(images), (max(classes) + 1 if classes else 0)
  records = [pack([n + 1, n + 1 + n_cls], b"")]
  records += [pack(float(c), img, i + 1) for i, (c, img) in enumerate(images)]
  arr = np.asarray(classes)
  for c in range(n_cls):
    at = np.flatnonzero(arr == c)
    lo, hi = (int(at[0]) + 1, int(at[-1]) + 2) if len(at) else (0, 0)
    records.append(pack([lo, hi], b""))
  idx_lines = []
  with open(rec_path, "wb") as f:
    for key, payload in enumerate(records):
      idx_lines.append(f"{key}\t{f.tell()}\n")
      f.write(struct.pack("<II", MAGIC, len(payload)))
      f.write(payload)
      f.write(b"\0" * ((4 - len(payload) % 4) % 4))
  with open(os.path.splitext(rec_path)[0] + ".idx", "w", encoding="ascii") as f:
    f.writelines(idx_lines)
