"""Failures of the writing rank, shared with every rank (docs/design.md §11: under torchrun
rank 0 alone writes a run). When one of rank 0's writes fails (the run's lock held by
another process, a file it must write refused), the other ranks must not wait in the
next collective until it times out: `on_writer` runs the write on rank 0 and broadcasts
its outcome, so every rank stops at once with rank 0's message.
"""

import torch
import torch.distributed as dist

from bioknow.base.errors import InputError
from bioknow.training.runfolder import first_line

MESSAGE_BYTES = 1000  # of rank 0's message, shared with the others


def share_failure(message: str | None, device) -> str | None:
    """Rank 0's failure message (None: it succeeded), as every rank receives it."""
    buffer = torch.zeros(MESSAGE_BYTES + 1, dtype=torch.uint8, device=device)
    if message is not None:
        data = message.encode()[:MESSAGE_BYTES]
        buffer[0] = 1
        buffer[1 : 1 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    dist.broadcast(buffer, src=0)
    if not int(buffer[0]):
        return None
    return bytes(buffer[1:].cpu().tolist()).rstrip(b"\0").decode(errors="replace")


def on_writer(where, action):
    """Run `action` on rank 0 alone (`where`: the rank, world and device of this process)
    and return what it returns (None on the other ranks). If it fails, every rank fails
    with it before any enters another collective: rank 0 with its own error, the others
    with an InputError quoting it."""
    result, error = None, None
    if where.writer:
        try:
            result = action()
        except Exception as e:  # shared with the other ranks, then raised again
            error = e
    if where.world > 1:
        message = share_failure(None if error is None else first_line(error), where.device)
        if message is not None:
            dist.barrier()  # every rank has the message before any exits
            if error is None:
                raise InputError(f"rank 0 failed, so rank {where.rank} stops: {message}")
    if error is not None:
        raise error
    return result
