"""Inference tracker (official `lib/test/tracker/grm.py: GRM`): single-sequence and batched tracking with one
jitted step per frame."""
from .tracker import (SequenceError, SequenceResult, SequenceTracker, TrackerCore, TrackerSettings,
                      division_threshold, map_box_back, track_sequences)

__all__ = ["SequenceError", "SequenceResult", "SequenceTracker", "TrackerCore", "TrackerSettings",
           "division_threshold", "map_box_back", "track_sequences"]
