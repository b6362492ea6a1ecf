"""The recognition recipe's augmentations (transforms.photometric), each on its own."""

import cv2
import ml_collections
import numpy as np
import pytest

from mfrjax.data import transforms


def aug_cfg(**on):
  c = ml_collections.ConfigDict(dict(
      crop_p=0.0, crop_min_area=0.8, blur_p=0.0, gaussian_blur_p=0.0, motion_blur_p=0.0,
      blur_limit=5, rgb_shift_p=0.0, rgb_shift_limit=20, jpeg_p=0.0, jpeg_quality=40))
  c.update(on)
  return c


def face(c=3, size=32, seed=0):
  rng = np.random.default_rng(seed)
  img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, c)).astype(np.uint8), (3, 3), 0)
  return img.reshape(size, size, c)


def sharpness(img):
  return cv2.Laplacian(img.astype(np.float32), cv2.CV_32F).var()


def test_all_probabilities_zero_is_identity_and_draws_nothing():
  img = face()
  rng = np.random.default_rng(0)
  out = transforms.photometric(img, rng, aug_cfg())
  np.testing.assert_array_equal(out, img)
  assert rng.random() == np.random.default_rng(0).random()  # no number was consumed


@pytest.mark.parametrize("key", ["blur_p", "gaussian_blur_p", "motion_blur_p"])
def test_blurs_lower_sharpness(key):
  img = face()
  out = transforms.photometric(img, np.random.default_rng(1), aug_cfg(**{key: 1.0}))
  assert out.shape == img.shape and out.dtype == np.uint8
  assert sharpness(out) < 0.8 * sharpness(img)


def test_motion_kernel_is_a_normalised_line():
  k = transforms.motion_kernel(5, 0.0)
  np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(k[2], 0.2, rtol=1e-6)   # horizontal: the middle row only
  assert k[[0, 1, 3, 4]].sum() == 0
  kv = transforms.motion_kernel(5, 90.0)
  np.testing.assert_allclose(kv[:, 2], 0.2, rtol=1e-6)


def test_rgb_shift_moves_each_channel_by_its_own_amount():
  img = np.full((8, 8, 3), 100, np.uint8)
  outs = [transforms.photometric(img, np.random.default_rng(s), aug_cfg(rgb_shift_p=1.0))
          for s in range(20)]
  shifts = np.array([o.reshape(-1, 3)[0].astype(int) - 100 for o in outs])
  assert np.abs(shifts).max() <= 20 and len({tuple(s) for s in shifts}) > 10
  for o, s in zip(outs, shifts):
    np.testing.assert_array_equal(o, np.broadcast_to(100 + s, o.shape))  # constant per channel


def test_jpeg_recompression_keeps_shape_and_adds_artefacts():
  for c in (1, 3):
    img = face(c)
    out = transforms.photometric(img, np.random.default_rng(0),
                                 aug_cfg(jpeg_p=1.0, jpeg_quality=10))
    assert out.shape == img.shape
    diff = np.abs(out.astype(int) - img).mean()
    assert 0 < diff < 40
  np.testing.assert_array_equal(transforms.jpeg(face(3), 100).shape, (32, 32, 3))


def test_random_crop_zooms_in_and_is_seeded():
  img = np.zeros((32, 32, 1), np.uint8)
  img[:, :16] = 255  # left half white
  cfg = aug_cfg(crop_p=1.0, crop_min_area=0.5)
  a = transforms.photometric(img, np.random.default_rng(3), cfg)
  b = transforms.photometric(img, np.random.default_rng(3), cfg)
  np.testing.assert_array_equal(a, b)
  assert a.shape == img.shape
  outs = [transforms.photometric(img, np.random.default_rng(s), cfg) for s in range(10)]
  assert any(not np.array_equal(o, img) for o in outs)


def test_brightness_contrast_probability():
  img = face(1)
  never = transforms.augment(img, np.random.default_rng(0), False, 0.0, 0.3, 0.3,
                             brightness_contrast_p=0.0)
  np.testing.assert_array_equal(never, img)
  always = transforms.augment(img, np.random.default_rng(0), False, 0.0, 0.3, 0.3,
                              brightness_contrast_p=1.0)
  assert not np.array_equal(always, img)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("sides", [(4, 40), (100, 160)])  # 160x160x3 > 65,793: NumPy's mean
def test_brightness_contrast_table_gives_the_bytes_of_the_direct_formula(channels, sides):
  """augment applies brightness/contrast as a 256-entry look-up table; it must give
  exactly what the per-pixel float32 formula gives (the streams before the table)."""
  rng = np.random.default_rng(5)
  for trial in range(50 if sides[1] < 100 else 8):
    img = rng.integers(0, 256, (int(rng.integers(*sides)), int(rng.integers(*sides)), channels),
                       dtype=np.uint8)
    draws = np.random.default_rng(trial)
    x = img.astype(np.float32)
    mean = x.mean()
    x = (x - mean) * (1 + draws.uniform(-0.3, 0.3)) + mean
    x = x + draws.uniform(-0.2, 0.2) * 255
    expected = np.clip(x, 0, 255).astype(np.uint8)
    got = transforms.augment(img, np.random.default_rng(trial), False, 0.0, 0.2, 0.3)
    np.testing.assert_array_equal(got, expected)


def test_float32_mean_is_numpys_to_the_bit():
  """The brightness/contrast centre, from OpenCV's exact sum: equal to NumPy's float32
  mean on every image, dark, bright, odd-sized, up to and past the exact-sum limit."""
  rng = np.random.default_rng(0)
  sizes = [(1, 1, 1), (112, 112, 3), (148, 148, 3), (149, 149, 3), (256, 256, 1)]
  sizes += [(int(rng.integers(1, 150)), int(rng.integers(1, 150)), int(rng.choice([1, 3])))
            for _ in range(400)]
  for i, shape in enumerate(sizes):
    img = rng.integers(0, int(rng.integers(1, 257)), shape, dtype=np.uint8)
    if i % 3 == 0:
      img[:] = 255
    got = transforms.float32_mean(img)
    assert got.dtype == np.float32 and got == img.astype(np.float32).mean(), shape


@pytest.mark.parametrize("channels", [1, 3])
def test_flip_and_rgb_shift_give_the_bytes_of_the_numpy_formulas(channels):
  """OpenCV's flip and look-up tables stand in for NumPy's reversed view and int16 clip
  (the streams written before them): the same draws give the same bytes."""
  for seed in range(20):
    img = face(channels, size=112, seed=seed)
    flipped = transforms.augment(img, np.random.default_rng(seed), True, 0.0, 0.0, 0.0)
    expected = img[:, ::-1] if np.random.default_rng(seed).random() < 0.5 else img
    assert flipped.flags.c_contiguous
    np.testing.assert_array_equal(flipped, expected)

    shifted = transforms.photometric(img, np.random.default_rng(seed),
                                     aug_cfg(rgb_shift_p=1.0, rgb_shift_limit=80))
    draws = np.random.default_rng(seed)
    draws.random()  # the rgb_shift_p draw
    shift = draws.integers(-80, 81, size=channels)
    np.testing.assert_array_equal(
        shifted, np.clip(img.astype(np.int16) + shift, 0, 255).astype(np.uint8))


def test_hflip_is_the_reversed_view_copied():
  rng = np.random.default_rng(0)
  for shape, dtype in [((5, 7), np.uint8), ((5, 7, 1), np.uint8), ((112, 112, 3), np.uint8),
                       ((6, 4, 3), np.float32), ((6, 4, 1), bool)]:
    img = (rng.random(shape) * 255).astype(dtype)
    out = transforms.hflip(img)
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, img[:, ::-1])


def test_grey_to_colour_repeats_the_channel():
  img = np.random.default_rng(0).integers(0, 256, (30, 30, 1), dtype=np.uint8)
  out = transforms.preprocess(img, 30, 3, 1.0)
  np.testing.assert_array_equal(out, np.repeat(img, 3, axis=2))
