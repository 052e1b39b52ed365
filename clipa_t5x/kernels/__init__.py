"""Optional fused kernels for the GPU train step (opt-in model options).

``layer_norm``: a Pallas (Triton) LayerNorm and a fused residual-add +
LayerNorm, forward and backward, used when ``ClipaConfig.norm_impl='pallas'``.
``gelu``: GELU with a one-pass backward that keeps only the bf16
pre-activation, used when ``ClipaConfig.mlp_impl='fused_gelu'``.
Both match the default XLA path to float rounding (tests/kernels/).
"""
