"""Data-parallel evaluation: each process of a launch evaluates a shard of every cell's items.

Started with accelerate (`accelerate launch --num_processes N -m lobolib sweep parameters/X.yaml`,
one process per GPU; several hosts: the same command on each host with --num_machines,
--machine_rank, --main_process_ip and --main_process_port), every process loads its own copy of
the model on its own GPU, prunes it to the same level (the masks are deterministic, so every copy
is identical), evaluates its shard of the items and the records of all shards are gathered to the
main process, which alone writes the cell. No record is lost or written twice: a cell is written
once, complete, in item order, after every shard has reported.

Shards are balanced by work, not by count alone: items are ranked by size (prompt characters, a
stand-in for tokens) and dealt out in snake order (0, 1, ..., N-1, N-1, ..., 0, 0, 1, ...), so
every shard gets the same mix of long and short prompts. A cell is done when its slowest shard
is; PubMedQA contexts range from 100 to 950 tokens, so a shard of unlucky lengths would keep the
others waiting.

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


def item_size(item) -> int:
    """The size of an item's prompt, in characters (question, context and options)."""
    return len(item.question) + len(item.context) + sum(len(option) for option in item.options)


def shard_indices(sizes: Sequence[int], shard: Shard) -> list[int]:
    """The positions of the items this process evaluates, ascending: items ranked by size (largest
    first, ties by position) are dealt to the shards in snake order, so every shard gets the same
    mix of sizes and the counts differ by at most one."""
    ranked = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    mine = [i for turn, i in enumerate(ranked) if _snake(turn, shard.world) == shard.rank]
    return sorted(mine)


def _snake(turn: int, world: int) -> int:
    """The shard dealt the `turn`-th item: 0..world-1, then world-1..0, and so on."""
    lap, place = divmod(turn, world)
    return place if lap % 2 == 0 else world - 1 - place


def shard_items(items: Sequence[T], shard: Shard) -> tuple[list[int], list[T]]:
    """(positions, items) of this process's shard of `items` (see `shard_indices`)."""
    positions = shard_indices([item_size(item) for item in items], shard)
    return positions, [items[i] for i in positions]


def gather_in_order(results: Sequence[T], positions: Sequence[int], shard: Shard, total: int) -> list[T]:
    """Merge every process's `results` (for the items at `positions`) back into item order.
    Every process gets the full list; with one process it is `results` itself."""
    if shard.world == 1:
        return list(results)
    indexed = gather_object(list(zip(positions, results)), shard)
    merged = [r for _, r in sorted(indexed, key=lambda pair: pair[0])]
    if len(merged) != total or sorted(p for p, _ in indexed) != list(range(total)):
        raise RuntimeError(f"data-parallel gather returned {len(merged)} results for {total} items")
    return merged


def gather_object(values: list, shard: Shard) -> list:
    """Every process's `values` concatenated in rank order, on every process (`values` itself
    with one process)."""
    if shard.world == 1:
        return list(values)
    from accelerate.utils import gather_object as accelerate_gather

    return accelerate_gather(list(values))


def barrier(shard: Shard) -> None:
    """Wait until every process gets here (no-op for one process)."""
    if shard.world > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
