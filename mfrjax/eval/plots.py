"""ROC plots (PNG) written next to the JSON results.

matplotlib (Agg, no display) draws them: a log-scaled FAR axis, a legend per curve and
readable ticks are what users compare methods by, and a hand-drawn OpenCV plot would
be a worse copy of it.
"""

from __future__ import annotations

import numpy as np


def write_roc_png(path: str, curves: dict[str, tuple[np.ndarray, np.ndarray]],
                  title: str = "ROC") -> None:
  """One log-FAR ROC plot with a curve per entry of `curves` ({label: (far, tar)})."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
  lowest = 1e-6
  for label, (far, tar) in curves.items():
    far, tar = np.asarray(far), np.asarray(tar)
    keep = far > 0
    if keep.any():
      lowest = max(min(lowest, far[keep].min()), 1e-6)
      ax.plot(far[keep], tar[keep], label=label, linewidth=1.5)
  ax.set_xscale("log")
  ax.set_xlim(lowest, 1.0)
  ax.set_ylim(0.0, 1.01)
  ax.set_xlabel("false accept rate (FAR)")
  ax.set_ylabel("true accept rate (TAR)")
  ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
