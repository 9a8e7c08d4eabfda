"""Networks: the architecture description (``spec``, torch-free, with CoordMLP's key names), inrdiag's own
coordinate MLP (``mlp``), inlet initialisations (``inits``), the adapter that makes any ``nn.Module``
diagnosable (``adapter``; its forward hooks in ``hooks``, the partial passes of sequential chains in
``chains``) and user model code (``usercode``, ``--model-code``)."""
