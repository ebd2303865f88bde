"""Evaluation: batched greedy generation with first-token option scores, the fused decoder
forward behind it, and the multi-tier answer parser."""
