"""Performance harness (`python -m lobolib bench ...`): speed and memory of the toolkit itself,
measured side by side with the approach it replaces. Not the evaluation benchmarks."""
