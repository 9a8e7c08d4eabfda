"""Cohort INRs: a shared encoder trained on many signals (``train``) and freeze-depth sweeps that
transfer it to new ones (``freeze``)."""
