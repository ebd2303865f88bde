"""Data-parallel evaluation: each process of a launch evaluates a shard of every cell's items.

Started with accelerate (`accelerate launch --num_processes N -m lobolib sweep parameters/X.yaml`,
one process per GPU; several hosts: the same command on each host with --num_machines,
--machine_rank, --main_process_ip and --main_process_port), every process loads its own copy of
the model on its own GPU, prunes it to the same level (the masks are deterministic, so every copy
is identical), evaluates items rank, rank + N, rank + 2N, ... and the records of all shards are
gathered to the main process, which alone writes the cell. No record is lost or written twice:
a cell is written once, complete, in item order, after every shard has reported.

Without a launcher (or with one process) the shard is the whole item list and nothing is gathered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel launch."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_shard() -> Shard:
    """The shard of this process: from accelerate's state when launched with several processes
    (WORLD_SIZE > 1 in the environment), else the single whole shard."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    from accelerate import PartialState

    state = PartialState()
    return Shard(state.process_index, state.num_processes)


def shard_items(items: Sequence[T], shard: Shard) -> list[T]:
    """The items this process evaluates: every world-th item from its rank on."""
    return list(items[shard.rank::shard.world])


def gather_in_order(results: Sequence[T], shard: Shard, total: int) -> list[T]:
    """Merge every process's `results` (for `shard_items(items, shard)`) back into item order.
    Every process gets the full list; with one process it is `results` itself."""
    if shard.world == 1:
        return list(results)
    from accelerate.utils import gather_object

    indexed = gather_object([(shard.rank + shard.world * j, r) for j, r in enumerate(results)])
    merged = [r for _, r in sorted(indexed, key=lambda pair: pair[0])]
    if len(merged) != total:
        raise RuntimeError(f"data-parallel gather returned {len(merged)} results for {total} items")
    return merged


def barrier(shard: Shard) -> None:
    """Wait until every process gets here (no-op for one process)."""
    if shard.world > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
