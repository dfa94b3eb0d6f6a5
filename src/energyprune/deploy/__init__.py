"""How a model runs: dtype/compile/CUDA-graph runtime, int8 quantisation, 2:4 kernels."""
