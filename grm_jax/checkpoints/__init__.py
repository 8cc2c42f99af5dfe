"""Checkpoints, one module per concern:

- `inference.load_for_inference`: the one entry for variables to track, evaluate or export with (a converted
  directory, a training workdir or an official .pth);
- `converted`: the converted format (`save_variables`, `load_variables`);
- `training`: a training workdir's checkpoints (`TrainingCheckpoints`, `load_training_variables`);
- `digests`: the array digests written with every checkpoint and checked on every read;
- `reading`: restoring orbax items onto the reader's devices, and the errors of a failed read.
"""
