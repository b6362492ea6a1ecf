"""Skin tone: the pixel rules, ordering of light and dark skin, groups that the
evaluator reads, and a run on faces with known tone groups (the synthetic set)."""

import math

import cv2
import numpy as np
import pytest

from mfrjax.data import sources
from mfrjax.prep import skin_tone
from mfrjax.tools import skin_tone as tool


def disc(bgr, bg=(40, 90, 30), size=64):
  img = np.zeros((size, size, 3), np.uint8)
  img[:] = bg
  cv2.circle(img, (size // 2, size // 2), size // 3, bgr, -1)
  return img


def test_skin_rules_and_tone_order():
  light, dark = disc((170, 190, 235)), disc((45, 70, 120))
  for img in (light, dark):
    m = skin_tone.skin_mask(img)
    assert m[32, 32] and not m[2, 2]          # the face, not the green background
  assert not skin_tone.skin_mask(disc((200, 60, 40)))[32, 32]  # blue is not skin
  t_light, t_dark = skin_tone.image_tone(light), skin_tone.image_tone(dark)
  assert t_light["lightness"] > t_dark["lightness"] and t_light["ita"] > t_dark["ita"]
  # ITA by hand from the L*a*b* of the light colour.
  lab = cv2.cvtColor(np.float32([[[170, 190, 235]]]) / 255, cv2.COLOR_BGR2LAB)[0, 0]
  assert t_light["ita"] == pytest.approx(math.degrees(math.atan2(lab[0] - 50, lab[2])),
                                         abs=1e-3)
  assert math.isnan(skin_tone.image_tone(disc((200, 60, 40)))["lightness"])  # no skin


def test_groups_are_equal_sized_lightest_first():
  tones = {"a": 80.0, "b": 20.0, "c": 50.0, "d": 60.0, "e": math.nan, "f": 30.0}
  g = skin_tone.tone_groups(tones, 2)
  assert g == {"a": "tone-1", "d": "tone-1", "c": "tone-1", "f": "tone-2", "b": "tone-2",
               "e": "unknown"}
  with pytest.raises(ValueError, match="--groups=0"):
    skin_tone.tone_groups(tones, 0)


def test_tool_recovers_the_synthetic_tone_groups(tmp_path):
  fs = sources.SyntheticFaceSet(12, 3, 64, seed=0)
  root = tmp_path / "faces"
  for i in range(len(fs.labels)):
    d = root / fs.identities[fs.labels[i]]
    d.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(d / f"{i}.png"), fs.load(i, False))
  summary = tool.tone_groups(str(root), str(tmp_path / "out"), groups=3, quiet=True)
  assert summary.written == 36
  groups = sources.read_groups_csv(str(tmp_path / "out" / "groups.csv"), fs.identities)
  est = np.array([int(g.split("-")[1]) for g in groups])
  true = np.array([int(g.split("-")[1]) for g in fs.groups])
  # Estimated and drawn tone groups agree in order (rank correlation).
  rank = lambda x: np.argsort(np.argsort(x + 1e-3 * np.arange(len(x))))  # noqa: E731
  assert np.corrcoef(rank(est), rank(true))[0, 1] > 0.7
  with pytest.raises(FileExistsError):
    tool.tone_groups(str(root), str(tmp_path / "out"), groups=3, quiet=True)
