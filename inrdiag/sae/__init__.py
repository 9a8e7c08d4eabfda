"""Sparse autoencoders on layer activations: the model and its training (``model``), splicing and
ablations (``analysis``), and SAELens-compatible files (``saelens``)."""
