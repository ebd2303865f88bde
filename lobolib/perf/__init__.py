"""Performance harness (`python -m lobolib bench ...`): speed and memory of the toolkit itself,
measured side by side with the approach it replaces. Not the evaluation benchmarks.

`shapes` (random-weight models, timing, peak memory: shared by all), `prune` (the pruning
kernel), `sweep` (sweep throughput against the reference loop), `gpus` (data-parallel and
sharded runs), `compress` (what each weight format buys, over the modules of `formats`, energy
from `energy`), `methods` (what one level of each compression method costs)."""
