"""One way to record a stage as a run in the store: `with recorded_run(store, stage, config) as run:`.

The run starts before the work and finishes after it: `done`, `cached` (the summary says
`cached: True`: a finished result was reused), `failed` (the error is recorded and re-raised)
or `interrupted` (Ctrl-C; a run whose process was killed outright is marked so by the next process
that opens the store), with wall time plus any timings the stage adds. Its config is written without
secret-looking keys or values (Store.start_run / finish_run drop them: the one place a run's config
is written). Under `accelerate launch` only the main process writes.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from store.store import Store

def is_main_process() -> bool:
    """False in the 2nd.. processes of `accelerate launch` / torchrun (they set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Run:
    """What the enclosed stage reports: config it resolves on the way, its summary (None: the run's
    teacher calls, summed from its requests) and timings beyond wall time."""
    config: dict
    run_id: str | None = None
    summary: dict | None = None
    timings: dict = field(default_factory=dict)

    def add_config(self, **parts: Any) -> None:
        self.config.update(parts)


@contextmanager
def recorded_run(store: Store | str | Path | None, stage: str, config: dict) -> Iterator[Run]:
    """Record the enclosed work as a run of `stage`. `store` is an open Store, a path (opened only to
    start and to finish, so a long training holds no lock on it), or None (nothing recorded)."""
    run = Run(dict(config))
    if store is None or not is_main_process():
        yield run
        return

    def write(action: Callable[[Store], Any]) -> None:
        if isinstance(store, Store):
            action(store)
        else:
            with Store(store) as opened:
                action(opened)

    def start(s: Store) -> None:
        run.run_id = s.start_run(stage, run.config)

    write(start)
    began = time.perf_counter()
    try:
        yield run
    except BaseException as err:
        error = f"{type(err).__name__}: {err}"[:1000]
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"  # Ctrl-C: interrupted

        def failed(s: Store) -> None:
            summary = dict(s.run_summary(run.run_id) if run.summary is None else run.summary, error=error)
            s.finish_run(run.run_id, status, _timings(run, began), summary=summary, config=run.config)
        write(failed)
        raise
    status = "cached" if (run.summary or {}).get("cached") else "done"
    write(lambda s: s.finish_run(run.run_id, status, _timings(run, began), summary=run.summary, config=run.config))


def _timings(run: Run, began: float) -> dict:
    return {"wall_s": round(time.perf_counter() - began, 3), **run.timings}
