"""seeding.generators gives np.random.default_rng's generators, bit for bit."""

import numpy as np
import pytest

from mfrjax.data import seeding


def _same(entropy, gens):
  assert len(gens) == len(entropy)
  for e, g in zip(entropy, gens):
    ref = np.random.default_rng(list(e))
    assert g.bit_generator.state == ref.bit_generator.state, e
    np.testing.assert_array_equal(g.random(4), ref.random(4))
    assert g.integers(1 << 16) == ref.integers(1 << 16)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_generators_are_default_rngs_for_every_seed_width(width):
  """Random words, small words and the edges of the uint32 range, for every width the
  vectorised path takes (SeedSequence pads a short pool with hashed zeros)."""
  r = np.random.default_rng(width)
  rows = r.integers(0, 2 ** 32, (300, width))
  rows[::3] %= 50
  rows[1::7] = 0
  rows[2::7] = 2 ** 32 - 1
  entropy = [tuple(int(x) for x in row) for row in rows]
  _same(entropy, seeding.generators(entropy))


def test_the_streams_seeds_match_including_the_salts():
  """The seeds the streams use: (seed, salt, global row) and (seed, salt, row, epoch)."""
  from mfrjax import salts
  entropy = [(0, salts.LABELLED_AUGMENT, r) for r in range(64)]
  entropy += [(12345, salts.IDENTITY_AUGMENT, 10 ** 9 + r) for r in range(0, 6400, 100)]
  _same(entropy, seeding.generators(entropy))
  entropy = [(3, salts.RESTORE_FLIP, r, e) for r in range(20) for e in range(3)]
  _same(entropy, seeding.generators(entropy))


def test_seeds_outside_the_vectorised_case_take_default_rng():
  """Words >= 2**32, more than four words, or rows of different lengths: still
  default_rng's generators (NumPy's own path); a negative word raises as it does."""
  for entropy in ([(0, 43, 2 ** 32), (1, 2, 3)], [(1, 2, 3, 4, 5)] * 3, [(1, 2), (1, 2, 3)]):
    _same(entropy, seeding.generators(entropy))
  with pytest.raises(ValueError):
    seeding.generators([(0, -1, 2)])
  with pytest.raises(ValueError):
    np.random.default_rng([0, -1, 2])
  assert seeding.generators([]) == []


def test_each_row_has_its_own_generator():
  """Drawing from one row's generator leaves the others where default_rng starts them
  (a loader that draws a mask inside a row's draws must not move another row)."""
  entropy = [(0, 7, r) for r in range(3)]
  gens = seeding.generators(entropy)
  gens[0].random(1000)
  _same(entropy[1:], gens[1:])
