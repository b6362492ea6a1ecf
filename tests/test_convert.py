"""Format conversion: RecordIO, verification .bin, pair lists (mfrjax-convert)."""

import json
import os
import struct

import cv2
import numpy as np
import pytest

from mfrjax.data import pair_sets, sources
from mfrjax.prep import convert, recordio
from mfrjax.tools import convert as tool
from tests.conftest import write_bin


def encoded(seed, ext=".png", shape=(12, 10, 3)):
  img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
  return img, cv2.imencode(ext, img)[1].tobytes()


def test_record_layout_round_trip(tmp_path):
  items = [(0, encoded(0)[1]), (0, encoded(1)[1]), (1, encoded(2, ".jpg")[1]), (2, encoded(3)[1])]
  rec = str(tmp_path / "train.rec")
  recordio.write_rec(rec, items)
  with recordio.RecordReader(rec) as r:
    head = r[0]
    assert head.labels == (5.0, 8.0) and head.image == b""   # images 1-4, classes 5-7
    assert recordio.image_labels(r) == [(1, 0), (2, 0), (3, 1), (4, 2)]
    assert r[3].image == items[2][1]
    assert r[6].labels == (3.0, 4.0)                            # class 1 = record 3
  # Every record starts at a 4-byte boundary with the magic number.
  for line in open(tmp_path / "train.idx"):
    off = int(line.split()[1])
    assert off % 4 == 0
    with open(rec, "rb") as f:
      f.seek(off)
      assert struct.unpack("<I", f.read(4))[0] == recordio.MAGIC


def test_split_record_parts_are_joined(tmp_path):
  payload = recordio.pack(7.0, b"abcdefgh")
  rec = tmp_path / "s.rec"
  with open(rec, "wb") as f:  # one record in two parts: cflag 1, then cflag 3
    for cflag, part in ((1, payload[:10]), (3, payload[10:])):
      f.write(struct.pack("<II", recordio.MAGIC, (cflag << 29) | len(part)))
      f.write(part + b"\0" * ((4 - len(part) % 4) % 4))
  (tmp_path / "s.idx").write_text("0\t0\n")
  with recordio.RecordReader(str(rec)) as r:
    assert r[0].labels == (7.0,) and r[0].image == b"abcdefgh"


def test_truncated_and_mismatched_files_name_the_record(tmp_path):
  rec = str(tmp_path / "t.rec")
  recordio.write_rec(rec, [(0, encoded(0)[1]), (1, encoded(1)[1])])
  offsets = recordio.read_idx(str(tmp_path / "t.idx"))
  data = open(rec, "rb").read()
  open(rec, "wb").write(data[:offsets[2] + 20])  # cut inside record 2
  with recordio.RecordReader(rec) as r:
    r[1]
    with pytest.raises(recordio.RecordIOError,
                       match=rf"t.rec: record 2 at offset {offsets[2]}: .* bytes present "
                             r"\(truncated"):
      r[2]
    with pytest.raises(recordio.RecordIOError, match="no record 9"):
      r[9]
  (tmp_path / "t.idx").write_text(f"0\t{offsets[1] + 4}\n")
  with recordio.RecordReader(rec) as r, pytest.raises(recordio.RecordIOError, match="bad magic"):
    r[0]
  (tmp_path / "t.idx").write_text("zero 0\n")
  with pytest.raises(recordio.RecordIOError, match="t.idx:1"):
    recordio.RecordReader(rec)


def test_orl_folder_to_rec_and_back_is_lossless(shared_data, tmp_path, capsys):
  rec = str(tmp_path / "orl.rec")
  assert tool.main(["folder2rec", f"--root={shared_data / 'orl'}", f"--rec={rec}",
                    f"--summary_json={tmp_path / 's.json'}"]) == 0
  assert json.loads((tmp_path / "s.json").read_text())["written"] == 400
  out = tmp_path / "back"
  assert tool.main(["rec2folder", f"--rec={rec}", f"--out={out}"]) == 0
  assert "written: 400" in capsys.readouterr().out
  back = sources.FolderFaceSet(str(out), mask_source="render")
  orig = sources.FolderFaceSet(str(shared_data / "orl"), mask_source="render")
  assert len(back.identities) == 40 and len(back.paths) == 400
  # Class c holds identity c's images in order; ORL's PGMs travelled as lossless PNG.
  for i in (0, 123, 399):
    np.testing.assert_array_equal(sources.read_image(back.paths[i]),
                                  sources.read_image(orig.paths[i]))
  with pytest.raises(FileExistsError, match="not empty"):
    convert.rec_to_folder(rec, str(out))
  with pytest.raises(FileExistsError, match="nothing is overwritten"):
    convert.folder_to_rec(str(shared_data / "orl"), rec)


def test_bin_to_folder_and_back(tmp_path):
  imgs = [encoded(i)[0] for i in range(6)]
  src = tmp_path / "a.bin"
  write_bin(str(src), imgs, [True, False, True], ext=".png")
  out = tmp_path / "folder"
  convert.bin_to_folder(str(src), str(out), quiet=True)
  lines = (out / "pairs.txt").read_text().splitlines()
  assert lines[1] == "images/000002.png images/000003.png 0"
  again = tmp_path / "b.bin"
  s = convert.pairs_to_bin(f"{out / 'pairs.txt'}@{out}", str(again), quiet=True)
  assert s.written == 3
  a, b = pair_sets.read_bin(str(src)), pair_sets.read_bin(str(again))
  assert a.issame.tolist() == b.issame.tolist()
  assert [a.raw(k) for k in range(6)] == [b.raw(k) for k in range(6)]  # bytes kept as is
  copy = tmp_path / "c.bin"  # a .bin as the source works too (images read from it)
  convert.pairs_to_bin(str(src), str(copy), quiet=True)
  assert [pair_sets.read_bin(str(copy)).raw(k) for k in range(6)] == [a.raw(k) for k in range(6)]
  first, second = ((out / "pairs.txt").read_text().split("\n")[0].split()[:2])
  (out / "reuse.txt").write_text(f"{first} {second} 1\n{second} {first} 0\n{first} {first} 1\n")
  reuse = convert.pairs_to_bin(f"{out / 'reuse.txt'}@{out}", str(tmp_path / "r.bin"), quiet=True)
  r = pair_sets.read_bin(str(tmp_path / "r.bin"))   # one image in several pairs and slots
  assert reuse.written == 3 and r.issame.tolist() == [True, False, True]
  assert [r.raw(k) for k in range(6)] == [a.raw(0), a.raw(1), a.raw(1), a.raw(0), a.raw(0),
                                          a.raw(0)]


def test_pair_lists_to_the_evaluator_format(tmp_path):
  for name, n in (("Ann", 2), ("Bob", 1)):
    os.makedirs(tmp_path / name)
    for i in range(1, n + 1):
      cv2.imwrite(str(tmp_path / name / f"{name}_{i:04d}.jpg"), encoded(i, shape=(8, 8, 3))[0])
  lfw = tmp_path / "pairs.txt"
  lfw.write_text("1\t1\nAnn\t1\t2\nAnn\t2\tBob\t1\n")
  convert.pairs_to_list(str(lfw), str(tmp_path), "lfw", str(tmp_path / "l.txt"))
  assert (tmp_path / "l.txt").read_text() == (
      "Ann/Ann_0001.jpg Ann/Ann_0002.jpg 1\nAnn/Ann_0002.jpg Bob/Bob_0001.jpg 0\n")
  flat = tmp_path / "flat"
  os.makedirs(flat)
  for n in ("x_1.jpg", "x_2.jpg", "y_1.jpg"):
    cv2.imwrite(str(flat / n), encoded(0, shape=(8, 8, 3))[0])
  calfw = tmp_path / "calfw.txt"
  calfw.write_text("x_1.jpg 4\nx_2.jpg 4\nx_1.jpg 0\ny_1.jpg 0\n")
  convert.pairs_to_list(str(calfw), str(flat), "calfw", str(tmp_path / "c.txt"))
  assert (tmp_path / "c.txt").read_text() == "x_1.jpg x_2.jpg 1\nx_1.jpg y_1.jpg 0\n"
  mlfw = tmp_path / "mlfw.txt"
  mlfw.write_text("x_1.jpg\tx_2.jpg\t1\n")
  convert.pairs_to_list(str(mlfw), str(flat), "mlfw", str(tmp_path / "m.txt"))
  assert (tmp_path / "m.txt").read_text() == "x_1.jpg x_2.jpg 1\n"
  calfw.write_text("x_1.jpg 4\n")
  with pytest.raises(ValueError, match="two lines per pair"):
    convert.pairs_to_list(str(calfw), str(flat), "calfw", str(tmp_path / "c2.txt"))


def test_help_lists_the_commands(capsys):
  with pytest.raises(SystemExit):
    tool.main(["--help"])
  text = capsys.readouterr().out
  for cmd in ("rec2folder", "folder2rec", "bin2folder", "pairs2bin", "pairs2list"):
    assert cmd in text
