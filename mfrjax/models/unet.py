"""Image-to-image networks of mask removal (README: Mask removal and inpainting).

  UNet                  mask segmentation: face image -> one logit per pixel (mask / face).
  InpaintGenerator      a U-Net of gated convolutions: (masked face, mask map) -> face.
                        A gated convolution (Yu et al., "Free-Form Image Inpainting with
                        Gated Convolution", 2019) learns a soft, per-channel validity
                        mask at every layer, so pixels of the hole do not pass their
                        meaningless values on as if they were image, as a plain
                        convolution would; it is what partial convolutions hard-code.
  PatchDiscriminator    PatchGAN (pix2pix, EdgeConnect): a score per overlapping patch
                        rather than per image, with spectral normalisation on every
                        convolution (Miyato et al. 2018), which keeps the hinge-loss GAN
                        stable without a gradient penalty.

None uses BatchNorm: the generator's statistics would mix hole and face pixels, and the
discriminator is spectrally normalised instead. The only mutable collection is the
discriminator's power-iteration state ('batch_stats', as flax's SpectralNorm names it).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _up(x: jax.Array) -> jax.Array:
  """x2 nearest-neighbour upsampling (no checkerboard artefacts of transposed convs)."""
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, 2 * h, 2 * w, c), "nearest")


class ConvBlock(nn.Module):
  """Two 3x3 convolutions, GroupNorm and ReLU: one level of the segmentation U-Net."""
  features: int

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
      x = nn.relu(nn.GroupNorm(num_groups=min(8, self.features))(x))
    return x


class UNet(nn.Module):
  """Encoder-decoder with skip connections; `out_channels` logits at the input size.

  The input side must divide by 2 ** (len(widths) - 1).
  """
  widths: Sequence[int] = (16, 32, 64)
  out_channels: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    skips = []
    for i, w in enumerate(self.widths):
      if i:
        x = nn.max_pool(x, (2, 2), (2, 2))
      x = ConvBlock(w)(x)
      skips.append(x)
    for w, skip in zip(reversed(self.widths[:-1]), reversed(skips[:-1])):
      x = ConvBlock(w)(jnp.concatenate([_up(x), skip], axis=-1))
    return nn.Conv(self.out_channels, (1, 1))(x)


class GatedConv(nn.Module):
  """out = ELU(conv_f(x)) * sigmoid(conv_g(x)): a learnt soft validity gate per channel."""
  features: int
  kernel: int = 3
  stride: int = 1
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(2 * self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                kernel_dilation=(self.dilation, self.dilation))(x)
    f, g = jnp.split(y, 2, axis=-1)
    return nn.elu(f) * nn.sigmoid(g)


class InpaintGenerator(nn.Module):
  """Gated-convolution U-Net: (image in [-1, 1] with the hole zeroed, mask in {0, 1})
  -> image in [-1, 1]. Down-sampling by strided gated convolutions, dilated gated
  convolutions at the bottleneck (context from across the face), skips to every level.
  """
  widths: Sequence[int] = (32, 64, 128)
  bottleneck_dilations: Sequence[int] = (2, 4)
  out_channels: int = 1

  @nn.compact
  def __call__(self, image, mask, train: bool = False):
    del train
    x = jnp.concatenate([image * (1.0 - mask), mask], axis=-1)
    skips = []
    for i, w in enumerate(self.widths):
      x = GatedConv(w, kernel=5 if i == 0 else 3, stride=1 if i == 0 else 2)(x)
      x = GatedConv(w)(x)
      skips.append(x)
    for d in self.bottleneck_dilations:
      x = GatedConv(self.widths[-1], dilation=d)(x)
    for w, skip in zip(reversed(self.widths[:-1]), reversed(skips[:-1])):
      x = GatedConv(w)(jnp.concatenate([_up(x), skip], axis=-1))
      x = GatedConv(w)(x)
    return jnp.tanh(nn.Conv(self.out_channels, (3, 3))(x))


class PatchDiscriminator(nn.Module):
  """Spectrally normalised PatchGAN on (image, mask): a real/fake logit per patch."""
  widths: Sequence[int] = (32, 64, 128)

  @nn.compact
  def __call__(self, image, mask, train: bool = False):
    x = jnp.concatenate([image, mask], axis=-1)
    for w in self.widths:
      x = nn.SpectralNorm(nn.Conv(w, (4, 4), (2, 2)))(x, update_stats=train)
      x = nn.leaky_relu(x, 0.2)
    return nn.SpectralNorm(nn.Conv(1, (3, 3)))(x, update_stats=train)


def composite(restored: jax.Array, image: jax.Array, mask: jax.Array) -> jax.Array:
  """The generator's pixels inside the mask, the input's outside: unmasked pixels are
  never changed by restoration (works on NumPy and JAX arrays alike)."""
  return mask * restored + (1.0 - mask) * image


def hole(seg: jax.Array, dilate: int) -> jax.Array:
  """The region to restore: the mask map grown by `dilate` pixels, so the mask's soft
  edge (alpha < 0.5, outside the binary map) is repainted too."""
  seg = seg.astype(jnp.float32)
  if dilate <= 0:
    return seg
  k = 2 * dilate + 1
  return nn.max_pool(seg, (k, k), strides=(1, 1), padding="SAME")
