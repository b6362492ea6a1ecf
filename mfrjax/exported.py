"""A trained model as a StableHLO artifact (jax.export) with its loader, or as ONNX.

    mfrjax-export --workdir=/tmp/arc112 --out=/tmp/arc112_model    # writes the two files:

    <out>.stablehlo   the serialized jax.export.Exported: weights baked in as constants,
                      input uint8 (N, H, W, C) with N symbolic (any batch), output (N, D)
                      float32 L2-normalised embeddings; pixel scaling inside the graph
    <out>.json        the input contract (run_info.preprocessing: size, channels and their
                      order, centre crop, alignment, upper-face cut) and the output size

Loading needs jax and numpy only, not mfrjax's models or the run:

    model = exported.load("/tmp/arc112_model")
    vectors = model(batch_uint8)          # (N, D) float32

ONNX (`--format=onnx`, the `export` extra: jax2onnx converts, onnxruntime runs it) in
insightface's input convention, so tools written for insightface's ONNX recognisers take
it as they are: `<out>.onnx` (and `<out>.onnx.json`) with input float32 (N, 3, S, S), RGB,
(x - 127.5) / 127.5, N free, S the run's image size (112 for aligned runs); a grey model
converts RGB to grey inside the graph (ITU-R BT.601 weights, as OpenCV), a colour one
reorders to its BGR, an upper-face model cuts the top rows itself. Output (N, D) float32,
L2-normalised.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

SUFFIX, META, ONNX = ".stablehlo", ".json", ".onnx"
ONNX_META = ".onnx.json"  # its own, so both formats can share an <out>
EXTRA = "pip install 'mfrjax[export]'"


def export(embedder, out: str, flip: bool = False) -> dict:
  """Writes `<out>.stablehlo` and `<out>.json` for an mfrjax.embedder.Embedder."""
  # mfrjax is imported here, not at the top: the loader below must run with jax alone.
  from mfrjax import embedder as embedder_lib  # pylint: disable=import-outside-toplevel
  from mfrjax.eval import embed as embed_lib  # pylint: disable=import-outside-toplevel

  def embed(images):
    return embedder_lib.forward(embedder.variables, embed_lib.to_float(images),
                                model=embedder.model, flip=flip, normalize=True)

  n = jax.export.symbolic_shape("n")[0]
  h, w, c = embedder.input_shape
  spec = jax.ShapeDtypeStruct((n, h, w, c), jnp.uint8)
  exp = jax.export.export(jax.jit(embed))(spec)
  with open(out + SUFFIX, "wb") as f:
    f.write(exp.serialize())
  return _write_meta(out + META, "jax.export (StableHLO)",
                     {"shape": ["N", h, w, c], "dtype": "uint8"},
                     int(exp.out_avals[0].shape[1]), embedder, flip)


def _write_meta(path: str, fmt: str, inputs: dict, dim: int, embedder, flip: bool) -> dict:
  """The artifact's contract beside it: input, output, flip TTA, the run's preprocessing."""
  meta = {"format": fmt, "input": inputs,
          "output": {"shape": ["N", dim], "dtype": "float32", "l2_normalised": True},
          "flip_tta": flip, "preprocessing": embedder.preprocessing, "step": embedder.step}
  with open(path, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return meta


def _insightface_graph(embedder, flip: bool):
  """(N, 3, S, S) RGB in [-1, 1] -> (N, D) unit vectors, with the run's channel handling."""
  from mfrjax import embedder as embedder_lib  # pylint: disable=import-outside-toplevel
  h = embedder.input_shape[0]
  channels = embedder.preprocessing["channels"]

  def embed(x):
    x = jnp.transpose(x, (0, 2, 3, 1))                                  # NHWC, RGB
    if channels == 1:   # cv2.COLOR_BGR2GRAY's weights; linear, so it commutes with scaling
      x = (x @ jnp.array([0.299, 0.587, 0.114], jnp.float32))[..., None]
    else:
      x = x[..., ::-1]  # the run's BGR order
    x = x[:, :h]        # the upper-face cut, if the run has one (else all rows)
    return embedder_lib.forward(embedder.variables, x, model=embedder.model, flip=flip,
                                normalize=True)
  return embed


def export_onnx(embedder, out: str, flip: bool = False) -> dict:
  """Writes `<out>.onnx` (module docstring) and `<out>.onnx.json`."""
  try:
    from jax2onnx import to_onnx  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"ONNX export needs the 'export' extra: {EXTRA}") from e
  s = embedder.preprocessing["image_size"]
  graph = _insightface_graph(embedder, flip)
  to_onnx(graph, [("N", 3, s, s)], return_mode="file", output_path=out + ONNX)
  dim = jax.eval_shape(graph, jax.ShapeDtypeStruct((1, 3, s, s), jnp.float32)).shape[1]
  return _write_meta(out + ONNX_META, "onnx (insightface convention)",
                     {"shape": ["N", 3, s, s], "dtype": "float32", "channels": "RGB",
                      "scaling": "(x - 127.5) / 127.5"}, int(dim), embedder, flip)


class Loaded:
  """A deserialized artifact: call it on uint8 (N, H, W, C) batches."""

  def __init__(self, path: str):
    base = path[:-len(SUFFIX)] if path.endswith(SUFFIX) else path
    with open(base + SUFFIX, "rb") as f:
      self._exp = jax.export.deserialize(bytearray(f.read()))
    with open(base + META, encoding="utf-8") as f:
      self.meta = json.load(f)

  def __call__(self, images) -> np.ndarray:
    x = np.asarray(images)
    want = tuple(self.meta["input"]["shape"][1:])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != want:
      raise ValueError(f"expected uint8 (N, {', '.join(map(str, want))}) images as the "
                       f"model's preprocessing makes them ({self.meta['preprocessing']}); "
                       f"got {x.dtype} {x.shape}")
    return np.asarray(self._exp.call(x))


def load(path: str) -> Loaded:
  return Loaded(path)
