"""The commands: one module per tool, each with `main(argv) -> exit status` and a console
script (pyproject.toml [project.scripts]; `mfrjax-<name> --help`), all reporting user
errors the one way of cli.py. They can also be run as `python -m mfrjax.tools.<module>`.

  train           mfrjax-train (mfrjax.main)      train and evaluate one recipe
  inference       mfrjax-embed, -verify, -identify, -export   use a trained model
  evaluate        mfrjax-eval              the evaluator on saved embeddings
  mask_faces      mfrjax-mask              realistic masks on a folder of faces
  align_faces     mfrjax-align             five-point alignment to 112x112
  convert         mfrjax-convert           .rec/.bin/pair lists <-> folders
  clean           mfrjax-clean             duplicates, unreadable files -> exclude list
  skin_tone       mfrjax-skin-tone         per-identity skin tone groups
  unmask          mfrjax-unmask            mask removal on a folder; its evaluation
  sweep           mfrjax-sweep             seeded sweeps, mean +- std
  compare         mfrjax-compare           the methods side by side
  peer_benchmark  mfrjax-peer              against dlib's network, open-set protocol
  bench_*         mfrjax-bench-throughput, -bench-compression, -bench-stem
"""
