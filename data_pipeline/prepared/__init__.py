"""Prepared datasets (TensorFlow Datasets, `array_record`): build once from the official downloads, then train
and evaluate from local disk or a bucket.

    python scripts/prepare_tfds.py got10k --manual-dir /data/GOT-10k --data-dir gs://bucket/tfds
    ds = load_training_dataset("GOT10K_vot_train", "gs://bucket/tfds")      # == readers.build_dataset(...)
    seqs = load_eval_dataset("lasot", "gs://bucket/tfds")                    # == evaluation load_eval_dataset

Builders: `builders.py` (TFDS `GeneratorBasedBuilder`s grm_got10k, grm_lasot, grm_trackingnet, grm_coco2017);
records and sequence tables: `store.py`; loaders: `datasets.py`; checks against the folders: `verify.py`.
The training pipeline opens prepared frames through `processing.open_frame` (the Python per-sample path).
"""
from .datasets import EVALUATION, TRAINING, builder_dir, load_eval_dataset, load_training_dataset
from ..prepared_store import PREFIX, is_frame_ref, read_frame, read_frame_bytes

__all__ = ["EVALUATION", "PREFIX", "TRAINING", "builder_dir", "is_frame_ref", "load_eval_dataset",
           "load_training_dataset", "read_frame", "read_frame_bytes"]
