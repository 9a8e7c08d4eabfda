"""The empirical neural tangent kernel, layer by layer: per-linear factors (``factors``), the points
(``points``), eigensolvers (``eigen``), the report (``kernel``), target alignment and gradient-descent
prediction (``target``), the torch-free configuration (``config``) and the one engine call (``analysis``)."""
