"""Sparse autoencoders on layer activations: the configuration and names (``config``, no torch), the
autoencoder and its training (``model``), splicing and ablations (``analysis``), SAELens-compatible files
(``saelens``), and the whole ``inrdiag sae`` computation on a checkpoint (``run``)."""
