"""Memory free, in use and at its peak: GPU allocator counters on CUDA, the system's RAM and the process's resident set on CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading

import psutil
import torch

MB = 1024 * 1024


def available_memory_bytes(device: torch.device) -> int:
    """Free memory where the model trains: the GPU's free memory on CUDA, the system's available RAM on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def release_freed_memory() -> None:
    """Hand memory freed by earlier work back to the OS, so the next peak measures the next job only.

    glibc keeps freed heap pages in the process (the resident set never shrinks) unless asked with
    malloc_trim; on CUDA, the caching allocator is emptied instead.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    libc = ctypes.util.find_library("c")
    if libc:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


class MemoryMonitor:
    """On CPU a thread samples the resident set size every ``interval`` seconds and keeps the peak."""

    def __init__(self, device: torch.device, interval: float = 0.05):
        self.cuda = device.type == "cuda"
        self.interval = interval
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "MemoryMonitor":
        self.reset_peak()
        if not self.cuda:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True, name="gantune-memory")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._rss()

    def _rss(self) -> int:
        rss = self._process.memory_info().rss
        self._peak = max(self._peak, rss)
        return rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._rss()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._peak = 0

    def current_mb(self) -> float:
        return (torch.cuda.memory_allocated() if self.cuda else self._rss()) / MB

    def peak_mb(self) -> float:
        return (torch.cuda.max_memory_allocated() if self.cuda else max(self._peak, self._rss())) / MB

    @property
    def kind(self) -> str:
        return "cuda_allocated" if self.cuda else "process_rss"
