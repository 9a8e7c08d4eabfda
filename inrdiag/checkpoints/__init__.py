"""Checkpoint files: reading without unpickling objects (``read``), third-party key layouts and
encoding conventions (``layouts``), building the model with the source of every property (``load``),
and writing inrdiag ``.safetensors`` files (``save``)."""
