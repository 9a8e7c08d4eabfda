"""Fitting a network to a signal: targets (images, occupancy grids; dispatch to ``signals``) in
``targets`` and the training loop with its memory estimate and provenance in ``loop``."""
