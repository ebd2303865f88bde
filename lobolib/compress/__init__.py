"""Compression: pruning (magnitude, Wanda, SparseGPT, N:M, attention heads) and weight-only
quantization (RTN, GPTQ) of a model in place, on one layer-by-layer calibration pass and one OBS
machinery; the storage each format needs."""
