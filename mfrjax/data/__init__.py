"""Training input: face sets (folders, the embedded synthetic set, pair lists and .bin
sets), per-image transforms, and the grain streams that feed the step (pipeline.py;
restore_data.py for mask removal). Data preparation is mfrjax/prep."""
