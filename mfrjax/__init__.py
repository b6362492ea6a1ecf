"""mfrjax: a JAX/Flax trainer for masked face recognition."""

__version__ = "0.1.0"
