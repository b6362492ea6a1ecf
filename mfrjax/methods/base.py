"""The interface of a method: what a trainer calls, with defaults where methods agree.

Why two families and not one: a method that learns embeddings is evaluated by
identifying and verifying unseen people (recognition.py); one that restores images is
evaluated on pixels (restoration.py). Their trainers share the step, loop and
checkpoints (train.py), so the split is only where the work really differs - the two
ends scenic (one trainer, models with build/loss hooks) and big_vision (a trainer per
project) sit at, taken where each fits.
"""

from __future__ import annotations

from typing import Any


class Method:
  """What every method has. Subclass EmbeddingMethod or ImageMethod, not this."""

  name: str = ""
  #: the images one training row loads; images/s in the logs and the throughput
  #: benchmark are rows/s x len(views).
  views: tuple[str, ...] = ()

  def train_and_evaluate(self, config, workdir: str) -> dict:
    """Runs the family's trainer (under the workdir lock, train.train_and_evaluate)."""
    raise NotImplementedError


class EmbeddingMethod(Method):
  """A method that learns face embeddings; recognition.py trains and evaluates it.

  Every loss has the signature

      loss(params, batch_stats, batch, rng, step, *, model, config, axis_name=None, **kw)
        -> (loss, (new_batch_stats, metrics))

  and is written on the global batch: under plain jit XLA inserts the cross-device
  reductions; inside shard_map (PowerSGD) `axis_name` makes them explicit. `**kw` are
  what `loss_kwargs` returns.
  """

  def check(self, config, mesh) -> None:
    """Config checks of this method, before any data is read; ValueError naming the key."""
    del config, mesh

  def build_model(self, model_cfg, axis_name: str | None = None, num_classes: int = 0) -> Any:
    """The flax module; `axis_name` for use inside shard_map, `num_classes` the number of
    training identities (only classifier heads use it)."""
    raise NotImplementedError

  def loss(self, params, batch_stats, batch, rng, step, *, model, config, axis_name=None,
           **kw):
    raise NotImplementedError

  def loss_kwargs(self, config, *, steps_per_epoch: int, num_classes: int, mesh=None) -> dict:
    """Keyword arguments bound into `loss` besides model and config; `mesh` is given for
    the jitted global step, None inside shard_map."""
    del config, steps_per_epoch, num_classes, mesh
    return {}

  def steps_per_epoch(self, config, train_groups: list) -> int:
    """Global batches in one epoch of `input_stream` (0 when the data is too small)."""
    raise NotImplementedError

  def input_stream(self, config, faceset, train_groups: list):
    """This process's checkpointable grain stream of training batches (data/pipeline.py)."""
    raise NotImplementedError

  def shard_classes(self, config) -> bool:
    """True when a parameter is split over devices along its class axis."""
    del config
    return False

  def train_and_evaluate(self, config, workdir: str) -> dict:
    from mfrjax import recognition  # pylint: disable=import-outside-toplevel
    return recognition.train_and_evaluate(self, config, workdir)


class ImageMethod(Method):
  """A method that restores masked images; restoration.py trains and evaluates it.

  Its loss has the signature `loss(params, batch_stats, batch, rng, step) ->
  (loss, (new_batch_stats, metrics))` once `loss_fn(config, model)` has bound the rest.
  """

  views = ("masked",)
  #: the columns of the contact sheet written after training (one image each), and how
  #: many examples (rows) of the first evaluation group it shows
  sheet_columns: tuple[str, ...] = ()
  sheet_rows = 8
  #: the evaluation scores printed in the results table
  result_keys: tuple[str, ...] = ()

  def build_model(self, config) -> Any:
    raise NotImplementedError

  def input_shape(self, config) -> tuple[int, ...]:
    """The shape the model is initialised with, (1, H, W, C)."""
    raise NotImplementedError

  def optimizers(self, config) -> dict[str, str]:
    """{parameter subtree: config key of its optimiser}: one entry ('' = all parameters),
    or one per subtree (a GAN's generator and discriminator); every one's schedule is
    checked when a resumed run changes config.num_epochs."""
    del config
    return {"": "optimizer"}

  def make_optimizer(self, config, schedules: dict):
    """The optax transformation, given a schedule per key of `optimizers`."""
    from mfrjax import optim  # pylint: disable=import-outside-toplevel
    return optim.make_optimizer(config.optimizer, schedules[""])

  def loss_fn(self, config, model):
    raise NotImplementedError

  def evaluate(self, model, variables, examples: dict, config) -> tuple[dict, list]:
    """(scores, the first `sheet_rows` contact-sheet rows) of one evaluation group
    (restore_data.eval_examples)."""
    raise NotImplementedError

  def train_and_evaluate(self, config, workdir: str) -> dict:
    from mfrjax import restoration  # pylint: disable=import-outside-toplevel
    return restoration.train_and_evaluate(self, config, workdir)
