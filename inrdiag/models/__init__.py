"""Networks: the architecture description (``spec``), inrdiag's own coordinate MLP (``mlp``), inlet
initialisations (``inits``), the hook adapter that makes any ``nn.Module`` diagnosable (``adapter``)
and user model code (``usercode``, ``--model-code``)."""
