"""How the viewer reads a store without ever writing it or keeping a writer out.

Each page opens the store with `Store(path, read_only=True)`. When no other process writes the
file, that is a read-only DuckDB connection, closed as soon as the page is built: DuckDB lets a
writer open a file only while no one else holds it, so a viewer that kept the file open would
keep `distill synth` from starting. When a writer holds the lock, `Store` copies the file and its
write-ahead log to a private snapshot and reads that (store/store.py, `_open_snapshot`); the
snapshot is kept for the next pages and copied again only when the file has changed and
`refresh_s` has passed, so an auto-refreshing progress page re-reads a running synthesis without
copying the store on every request.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.errors import DistillError
from store.store import Store


def _stamp(path: Path) -> tuple:
    """What changes when a writer commits: size and mtime of the file and of its write-ahead log."""
    out = []
    for p in (path, Path(str(path) + ".wal")):
        try:
            st = os.stat(p)
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


class StoreSource:
    """One store file, opened read-only for each page (see the module docstring)."""

    def __init__(self, path: str | Path, refresh_s: float = 2.0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DistillError(f"store {self.path} does not exist: pass --store with a store a stage has written")
        self.refresh_s = refresh_s
        self._lock = threading.Lock()  # one page at a time touches the connection
        self._snapshot: Store | None = None
        self._snapshot_stamp: tuple = ()
        self._snapshot_at = 0.0
        self.last_was_snapshot = False

    def _fresh_snapshot(self) -> Store | None:
        snap = self._snapshot
        if snap is None:
            return None
        if time.monotonic() - self._snapshot_at < self.refresh_s or _stamp(self.path) == self._snapshot_stamp:
            return snap
        snap.close()
        self._snapshot = None
        return None

    @contextmanager
    def reading(self) -> Iterator[Store]:
        """The store for one page; a direct connection is closed at the end, a snapshot kept."""
        with self._lock:
            store = self._fresh_snapshot()
            if store is None:
                stamp = _stamp(self.path)
                store = Store(self.path, read_only=True)
                if store.snapshot:
                    self._snapshot, self._snapshot_stamp, self._snapshot_at = store, stamp, time.monotonic()
            self.last_was_snapshot = store.snapshot is not None
            try:
                yield store
            finally:
                if store.snapshot is None:
                    store.close()

    def close(self) -> None:
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.close()
                self._snapshot = None
