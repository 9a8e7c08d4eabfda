"""The empirical neural tangent kernel, layer by layer: per-linear factors (``factors``), eigensolvers
(``eigen``), the report (``kernel``) and target alignment / gradient-descent prediction (``target``)."""
