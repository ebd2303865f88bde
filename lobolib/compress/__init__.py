"""Compression: pruning methods (and, next, quantization), applied to a model in place."""
