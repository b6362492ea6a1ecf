"""The per-row random generators of the training streams, seeded for a whole batch at once.

Every row of the image, identity and mask-removal streams draws its augmentations from
`np.random.default_rng([seed, SALT, row, ...])` (salts.py), so a row's draws follow its
global index whatever the process count, and a resumed run draws the same numbers. One
`default_rng` per row costs 10-24 us on a 2-core CPU, most of it NumPy's SeedSequence
hashing the few seed words in Python-level steps: a fifth of a small image's whole input
work (README: Throughput and bf16). `generators` gives the very same generators (the
same PCG64 state, so the same draws) for a batch of rows with that hashing done once,
vectorised over the rows: ~3-5 us per row.

The hashing is NumPy's `SeedSequence` (numpy/random/bit_generator.pyx: `mix_entropy`
into a pool of four 32-bit words, then `generate_state`), fed to PCG64 through NumPy's
public `ISeedSequence` interface, which PCG64 asks for its four 64-bit seed words.
`tests/test_seeding.py` compares the states with `default_rng`'s for thousands of seeds;
seeds outside the vectorised case (a word >= 2**32, a negative one, more than four) take
`default_rng` itself, row by row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.random.bit_generator import ISeedSequence

_MASK32 = 0xFFFFFFFF
_POOL = 4  # SeedSequence's default pool size, in 32-bit words
# SeedSequence's hash constants. The multiplier of each hashmix call is a fixed sequence
# (INIT_A times MULT_A to the k), whatever the data, so it is computed once here.
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715


def _powers(first: int, mult: int, n: int) -> np.ndarray:
  out = [first]
  for _ in range(n):
    out.append(out[-1] * mult & _MASK32)
  return np.array(out, np.uint64)


# mix_entropy makes 4 + 4 * 3 hashmix calls for a pool of 4; generate_state 8 for PCG64.
_HASH_A = _powers(_INIT_A, _MULT_A, _POOL * _POOL)
_HASH_B = _powers(_INIT_B, _MULT_B, 2 * _POOL)


class _SeedWords(ISeedSequence):
  """The four uint64 words a SeedSequence would give PCG64, already computed."""

  def __init__(self, words: np.ndarray):
    self.words = words

  def generate_state(self, n_words, dtype=np.uint32):
    del n_words, dtype  # PCG64 asks for exactly these: 4 words of uint64
    return self.words


def _hashmix(value: np.ndarray, k: int, consts: np.ndarray = _HASH_A) -> np.ndarray:
  """SeedSequence's k-th hash of uint32 values held in uint64 (no overflow): `mix_entropy`'s
  hashmix with its constants (_HASH_A), or `generate_state`'s with its own (_HASH_B)."""
  value = (value ^ consts[k]) * consts[k + 1] & _MASK32
  return value ^ (value >> 16)


def _pcg64_words(entropy: np.ndarray) -> np.ndarray:
  """(N, K<=4) uint32 seed words -> (N, 4) uint64: what `SeedSequence(row)` hands PCG64."""
  n, width = entropy.shape
  zeros = np.zeros(n, np.uint64)
  pool = [_hashmix(entropy[:, i] if i < width else zeros, i) for i in range(_POOL)]
  k = _POOL
  for src in range(_POOL):  # every word mixed into every other, so late words reach early ones
    for dst in range(_POOL):
      if src != dst:
        h = _hashmix(pool[src], k)
        k += 1
        # uint64 arithmetic wraps modulo 2**64, so the low 32 bits are uint32's.
        mixed = (np.uint64(_MIX_L) * pool[dst] - np.uint64(_MIX_R) * h) & _MASK32
        pool[dst] = mixed ^ (mixed >> 16)
  words = np.empty((n, 2 * _POOL), np.uint32)
  for i in range(2 * _POOL):  # generate_state: the pool cycled, each word hashed again
    words[:, i] = _hashmix(pool[i % _POOL], i, _HASH_B)
  return words.astype("<u4").view("<u8").astype(np.uint64)  # as NumPy pairs them


def generators(entropy: Sequence[Sequence[int]]) -> list[np.random.Generator]:
  """`[np.random.default_rng(list(e)) for e in entropy]`, bit for bit, in one pass.

  Args:
    entropy: one sequence of non-negative integers per row, e.g. (seed, salt, row); all
      rows of the same length.

  Returns:
    One PCG64 generator per row, in the state `default_rng` would give it (the same
    draws). Their bit generator's `seed_seq` holds the computed words, not a
    SeedSequence, so they cannot `spawn`; nothing in the streams does.
  """
  rows = [tuple(int(x) for x in e) for e in entropy]
  if not rows:
    return []
  width = len(rows[0])
  if (width == 0 or width > _POOL or any(len(r) != width for r in rows)
      or any(not 0 <= x <= _MASK32 for r in rows for x in r)):
    return [np.random.default_rng(list(r)) for r in rows]  # NumPy's general path
  words = _pcg64_words(np.array(rows, np.uint64))
  return [np.random.Generator(np.random.PCG64(_SeedWords(w))) for w in words]
