"""Where parallel work runs: a local process pool or Ray. One switch for every sharded stage.

`map_tasks(fn, argument_tuples, workers, executor)` runs `fn(*args)` for each tuple and returns the
results in order. "local" is a spawned process pool on this machine; "ray" is Ray tasks on the
cluster at RAY_ADDRESS or, without one, a local cluster with `workers` CPU slots. `fn` must be a
module-level function (the pool pickles it by name; Ray ships it with cloudpickle).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from core.errors import DistillError

EXECUTORS = ("local", "ray")


def check_executor(executor: str, workers: int) -> None:
    if executor not in EXECUTORS:
        raise DistillError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise DistillError(f"--workers {workers}: use 1 or more")


def ray_module(workers: int) -> Any:
    """Ray, connected: to RAY_ADDRESS when set, else a local cluster with `workers` CPU slots."""
    try:
        import ray
    except ImportError:
        raise DistillError("--executor ray needs the ray package: pip install ray, or use --executor local") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=True, configure_logging=False)
    return ray


def map_tasks(fn: Callable[..., Any], arguments: Sequence[tuple], workers: int, executor: str = "local") -> list:
    """`[fn(*a) for a in arguments]`, computed by `workers` processes (local) or Ray tasks."""
    check_executor(executor, workers)
    if executor == "ray":
        ray = ray_module(workers)
        task = ray.remote(num_cpus=1)(fn)
        return ray.get([task.remote(*a) for a in arguments])
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(arguments)) or 1,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_call, [(fn, a) for a in arguments]))


def _call(fn_and_args: tuple) -> Any:
    fn, args = fn_and_args
    return fn(*args)
