"""The trainer's batches, made ahead of the step (docs/design.md §4: the stream must never
be what the device waits for).

A background thread turns the stream's batches into the tensors a step takes: this
rank's rows of the token ids and of the next-token targets, and the token counts that
scale the loss. On CUDA it also copies them to the device on a side stream, from pinned
host buffers that are reused (a ring, each slot guarded by the event of its last copy)
rather than allocated per step. At most `depth` batches wait in a bounded queue.
"""

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from bioknow.data.stream import Batch

IGNORE = -100
DEPTH = 3


def targets_of(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Position t predicts token t+1 of the same window; padding (beyond each row's
    length) and the last position of each window predict nothing."""
    real = np.arange(tokens.shape[1]) < np.asarray(lengths)[:, None]
    targets = np.full(tokens.shape, IGNORE, dtype=np.int64)
    targets[:, :-1] = np.where(real[:, 1:], tokens[:, 1:], IGNORE)
    return targets


@dataclass
class Ready:
    """A batch as a step takes it."""

    batch: Batch
    x: torch.Tensor  # [rows, window] int64 token ids, on the device
    y: torch.Tensor  # [rows, window] int64 targets (IGNORE where none)
    mine: int  # targets in this rank's rows
    total: int  # targets in the whole global batch
    copied: torch.cuda.Event | None = None  # CUDA: the copy to wait for


class PinnedRing:
    """Pinned host buffers for [rows, window] ids and targets, reused in turn; a slot is
    written again only once its last copy to the device has finished."""

    def __init__(self, shape: tuple[int, int], slots: int):
        self.slots = [
            tuple(torch.empty(shape, dtype=torch.int64).pin_memory() for _ in "xy")
            for _ in range(slots)
        ]
        self.events: list[torch.cuda.Event | None] = [None] * slots
        self.next = 0

    def copy(self, x: np.ndarray, y: np.ndarray, device, side: torch.cuda.Stream):
        """x and y on the device, copied on `side` through the next free slot; with the
        event that marks the copy done."""
        i, self.next = self.next, (self.next + 1) % len(self.slots)
        if self.events[i] is not None:
            self.events[i].synchronize()
        host_x, host_y = self.slots[i]
        host_x.copy_(torch.from_numpy(x))
        host_y.copy_(torch.from_numpy(y))
        with torch.cuda.stream(side):
            dx = host_x.to(device, non_blocking=True)
            dy = host_y.to(device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(side)
        self.events[i] = done
        return dx, dy, done


def prepare(batch: Batch, rows: slice) -> tuple[np.ndarray, np.ndarray, int, int]:
    """This rank's rows of ids and targets, and the target counts (mine, total)."""
    targets = targets_of(batch.tokens, batch.lengths)
    total = int((targets != IGNORE).sum())
    y = targets[rows]
    return batch.tokens[rows].astype(np.int64), y, int((y != IGNORE).sum()), total


class Prefetcher:
    """Iterate over Ready batches made by a background thread from `batches`. Use as a
    context manager: leaving it early stops the thread."""

    def __init__(self, batches: Iterator[Batch], rows: slice, device, depth: int = DEPTH):
        self.batches, self.rows, self.device = batches, rows, torch.device(device)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.cuda = self.device.type == "cuda"
        self.side = torch.cuda.Stream(self.device) if self.cuda else None
        self.ring = None  # made on the first batch, when the shape is known
        self.depth = depth
        self.thread = threading.Thread(target=self._work, name="bioknow-feed", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        while self.thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for batch in self.batches:
                x, y, mine, total = prepare(batch, self.rows)
                if self.cuda:
                    if self.ring is None:
                        self.ring = PinnedRing(x.shape, self.depth + 2)
                    dx, dy, done = self.ring.copy(x, y, self.device, self.side)
                    ready = Ready(batch, dx, dy, mine, total, done)
                else:
                    ready = Ready(batch, torch.from_numpy(x), torch.from_numpy(y), mine, total)
                if not self._put(ready):
                    return
            self._put(None)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def __iter__(self) -> Iterator[Ready]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            if item.copied is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(item.copied)
                item.x.record_stream(current)
                item.y.record_stream(current)
            yield item
