"""Data-parallel training under torchrun: `trainer.strategy=ddp` (or `auto` when WORLD_SIZE > 1).

    torchrun --nproc_per_node=N -m dlrun trainer.strategy=ddp ...

torchrun starts N copies of dl-run and gives each RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
Every rank builds the same model from the same seed and wraps it in DistributedDataParallel, which averages
the gradients across ranks in backward. What this module settles:

- batch size: `data.batch_size` is the *global* batch. Each rank trains on its `batch_size / N` share of
  every global batch (data modules get rank and world size in `setup`), so N processes take the same
  optimizer steps on the same batches as one process with the same config, up to float rounding (models
  with dropout draw their masks per rank, and BatchNorm normalizes per rank, so those differ slightly).
- validation: every rank validates its shard of the validation set with the unwrapped model (no
  collective inside the loop, so shards of unequal length are fine); the metric sums are all-reduced once.
- train metrics: the per-rank MetricSums are all-reduced at epoch end, so the logged values are global.
  Nothing is synced per step beyond DDP's own gradient all-reduce.
- files: only rank 0 writes logs, TensorBoard events, curves, metrics.json and checkpoints; checkpoints
  hold the unwrapped model's state_dict (no `module.` prefix), so they load into a single-process run.
- resume: rank 0 resolves `trainer.resume` (auto included) and broadcasts the path; every rank loads it.
- run directory: see `shared_run_stamp`.

Single-process runs (`strategy=single`, or `auto` without torchrun) never touch torch.distributed.
"""

import atexit
import inspect
import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from dlrun.engine.device import select_device
from dlrun.engine.metrics import MetricSums
from dlrun.engine.ranks import env_world_size
from dlrun.errors import DlrunError

log = logging.getLogger("dlrun")

STRATEGIES = ("auto", "single", "ddp")


# ------------------------------------------------------------------ run directory agreement
_STORE = None  # (store, rank, world_size) of torchrun's env:// rendezvous, made once per process


def rendezvous():
    """The key-value store behind torchrun's env:// variables: exactly what init_process_group("env://")
    would connect to (torchrun's agent store, or one hosted by rank 0). Made once; the process group is
    later built on the same store."""
    global _STORE
    if _STORE is None:
        import torch.distributed as dist

        _STORE = next(dist.rendezvous("env://"))
    return _STORE


def shared_run_stamp(local: tuple[float, str]) -> tuple[float, str]:
    """Rank 0's (time, run id) for every rank: the run directory pattern `<time>_<run id>` then names the
    same directory in every process, so Hydra (which creates it in each process before the app starts)
    makes one directory, and the ranks agree on it.

    Why the store and not values torchrun hands out: the time is read by each process at its own moment
    (ranks finish importing at different times and can straddle a second), TORCHELASTIC_RUN_ID is `none`
    unless --standalone or --rdzv-id is given, and the agent's pid differs between nodes. The rendezvous
    store is what every rank must reach anyway to form the process group, so it is there under any env://
    launcher (torchrun, or srun with the variables exported), on one node or many. The key carries
    torchrun's restart count, so an elastic restart gets a fresh directory and never reads a stale one."""
    store, rank, _ = rendezvous()
    key = f"dlrun/run_stamp/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if rank == 0:
        store.set(key, f"{local[0]!r} {local[1]}")
    when, run_id = store.get(key).decode().split()
    return float(when), run_id


# ------------------------------------------------------------------------------ the strategy
@dataclass(frozen=True)
class Distributed:
    """Where this process stands: rank 0 of 1 without a process group (single), or a DDP rank."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: single process, no process group

    @property
    def ddp(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the training step runs: DDP around `model` (whose parameters it shares), or `model`."""
        if not self.ddp:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)

    def no_sync(self, wrapped: nn.Module, sync: bool) -> AbstractContextManager:
        """Around a micro-batch's forward and backward: skip DDP's gradient all-reduce unless `sync`
        (gradient accumulation all-reduces once, on the micro-batch that ends the accumulation)."""
        return wrapped.no_sync() if self.ddp and not sync else nullcontext()

    def setup_data(self, data, device: torch.device, seed: int) -> None:
        """data.setup(device, seed), plus rank and world_size when there is more than one process."""
        if self.world_size == 1:
            data.setup(device, seed)
            return
        params = inspect.signature(data.setup).parameters
        if not {"rank", "world_size"} <= set(params):
            raise DlrunError(
                f"{type(data).__name__}.setup() takes no rank/world_size, so it cannot split its batches "
                "between processes; add them (see dlrun.data.in_memory.InMemoryData) or run one process"
            )
        batch_size = getattr(data, "batch_size", None)
        if isinstance(batch_size, int) and batch_size % self.world_size:
            raise DlrunError(
                f"data.batch_size={batch_size} is the global batch; it must be divisible by the "
                f"{self.world_size} processes"
            )
        data.setup(device, seed, rank=self.rank, world_size=self.world_size)

    def read_sums(self, sums: MetricSums) -> tuple[dict[str, float], int]:
        """MetricSums.read(), summed over all ranks (one all-reduce) under DDP."""
        if not self.ddp:
            return sums.read()
        import torch.distributed as dist

        # A rank may have no batches (a validation shard shorter than the others, a resumed epoch already
        # done), hence no names: agree on them first so that every rank packs the same tensor.
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, sorted(sums.sums))
        names = sorted(set().union(*gathered))
        device = self._device()
        zero = torch.zeros((), dtype=torch.float64, device=device)
        values = [
            sums.sums[n].detach().double().reshape(()).to(device) if n in sums.sums else zero for n in names
        ]
        packed = torch.stack([*values, torch.tensor(float(sums.count), dtype=torch.float64, device=device)])
        dist.all_reduce(packed)
        *totals, count = packed.tolist()
        return dict(zip(names, totals, strict=True)), int(round(count))

    def sum(self, value: int | float) -> int | float:
        """A number summed over all ranks (itself without DDP); an int stays an int."""
        if not self.ddp:
            return value
        import torch.distributed as dist

        packed = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(packed)
        return type(value)(packed.item())

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a picklable object: a path, a small dict)."""
        if not self.ddp:
            return obj
        import torch.distributed as dist

        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE = Distributed()


def _destroy_process_group() -> None:
    """At exit. A DDP wrapper left in a reference cycle (trainer <-> callbacks) would otherwise be freed at
    interpreter shutdown, after its process group: gloo can then abort the process ("terminate called
    without an active exception", seen once in CI at the end of a resumed two-rank run)."""
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def _ddp_device(spec: str, local_rank: int) -> torch.device:
    """Each rank's device: cuda:LOCAL_RANK on CUDA (`cuda:N` is read as `cuda`), else the CPU."""
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    kind = spec.split(":", 1)[0]
    if kind == "cuda":
        device = select_device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    if kind == "cpu":
        return torch.device("cpu")
    raise DlrunError(f"trainer.strategy=ddp runs on cuda or cpu, not trainer.device={spec}")


def setup(
    strategy: str = "auto", backend: str = "auto", device: str = "auto"
) -> tuple[Distributed, torch.device]:
    """Resolve trainer.strategy / ddp_backend / device; under DDP join (once) the process group."""
    strategy = str(strategy)
    if strategy not in STRATEGIES:
        raise DlrunError(f"trainer.strategy={strategy!r} is unknown; use {', '.join(STRATEGIES)}")
    world_size = env_world_size()
    if strategy == "auto":
        strategy = "ddp" if world_size > 1 else "single"
    if strategy == "single":
        if world_size > 1:
            raise DlrunError(
                f"trainer.strategy=single, but this is one of {world_size} processes (torchrun's "
                "WORLD_SIZE): each would train alone into the same run directory; "
                "use trainer.strategy=ddp or auto"
            )
        return SINGLE, select_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise DlrunError(
            "trainer.strategy=ddp needs the processes torchrun starts: "
            "torchrun --nproc_per_node=N -m dlrun trainer.strategy=ddp ..."
        )
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = _ddp_device(device, local_rank)
    backend = str(backend)
    if backend == "auto":
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        store, rank, world_size = rendezvous()
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
        atexit.register(_destroy_process_group)
        if rank == 0:
            log.info("DDP: %d processes, backend %s", world_size, backend)
    elif dist.get_backend() != backend:  # a later trainer in this process (K-fold, a sweep's next job)
        raise DlrunError(
            f"the process group already runs {dist.get_backend()}; trainer.ddp_backend={backend} differs"
        )
    return Distributed(dist.get_rank(), local_rank, dist.get_world_size(), backend), torch_device
