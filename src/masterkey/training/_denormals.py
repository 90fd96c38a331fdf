"""Denormal floats flushed to zero during CPU training, where x86 arithmetic on them is many times slower.

Floats below float32's smallest normal number (about 1.2e-38) are computed in microcode on x86 CPUs, tens of times
slower than normal ones. Some training runs make many of them in their activations or gradients: ConvNeXt-atto at
64 px (batch 64, one thread, Animal-MNIST) trained 3 to 5 times slower at a learning rate of 8e-3 than at 2e-3 in the
cross-family sweep, and one step of it, from a checkpoint trained at 1.6e-2, took 3.6 s against 0.56 s with them
flushed (``benchmarks/denormals.py``). Within :func:`flush_denormals` torch flushes them to zero
(``torch.set_flush_denormal``: the CPU's flush-to-zero and denormals-are-zero modes): a number that small changes
nothing a run learns, but runs are bit-identical only to runs under the same mode, so ``results.json`` records it
(its ``config``'s ``flush_denormal``).

torch sets the mode of the thread that calls it: with one torch thread (the experiments') that is all of the
arithmetic. On a CPU without the modes, and on a GPU, it does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import torch

__all__ = ["can_flush_denormals", "flush_denormals"]

_lock = threading.Lock()
_depth = 0  # nested uses restore once, on the outermost exit


@functools.cache
def can_flush_denormals() -> bool:
    """Whether this CPU can flush denormal floats to zero (x86 with SSE3). Asking leaves the mode off.

    Example:
        >>> can_flush_denormals()  # on an x86 CPU
        True
    """
    return bool(torch.set_flush_denormal(False))


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Within this context torch flushes denormal floats to zero on the CPU; it yields whether that applies. On
    leaving, the mode is off again (torch's default).

    Example:
        >>> with flush_denormals():
        ...     loss = F.cross_entropy(model(images), labels)
        ...     loss.backward()
    """
    global _depth
    if not (enabled and can_flush_denormals()):
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            torch.set_flush_denormal(True)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.set_flush_denormal(False)
