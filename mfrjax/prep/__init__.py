"""Data preparation, apart from training: masking, alignment, landmarks, format
conversion (RecordIO, verification .bin), cleaning, skin tone.

Used by the commands (mfrjax/tools) before a run, to turn a face set into what the
trainer reads (mfrjax/data). Imports no JAX (OpenCV and NumPy only; dlib optionally for
landmarks), so it can be used - and tested - without the training stack. The one
exception to the direction of imports: the trainer's input may draw masks at load time
with `masking`, the same renderer the tools use.
"""
