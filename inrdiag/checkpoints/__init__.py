"""Checkpoint files: reading without unpickling objects (``read``), third-party key layouts and
encoding conventions (``layouts``, a package: one registered ``Layout`` per codebase layout), building
the model with the source of every property (``load``), and writing inrdiag ``.safetensors`` files
(``save``)."""
