"""What the machine is doing, on Linux, macOS and Windows alike: the load average and a
process's peak memory. The benchmarks record both beside their timings.

The standard library's ``os.getloadavg`` and ``resource`` module exist only on POSIX
systems, so each function here picks the call its system has.
Layer 0: standard library only.
"""
from __future__ import annotations

import os
import sys


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, averaged; 2 decimals), or ``None``
    where the system has none (Windows)."""
    getloadavg = getattr(os, "getloadavg", None)
    if getloadavg is None:
        return None
    try:
        return round(float(getloadavg()[0]), 2)
    except OSError:
        return None


def _windows_peak_bytes() -> int:
    """PeakWorkingSetSize of this process, in bytes, from the Windows process API."""
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD),
                    ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                    ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
                    ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                    ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t)]

    counters = Counters()
    counters.cb = ctypes.sizeof(Counters)
    process = ctypes.windll.kernel32.GetCurrentProcess()
    if not ctypes.windll.psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
        raise OSError("GetProcessMemoryInfo failed")
    return int(counters.PeakWorkingSetSize)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (2**20 bytes).

    Linux: ``VmHWM`` from ``/proc/self/status`` (``getrusage``'s ``ru_maxrss`` would
    report the parent's peak when that was larger, since Linux keeps it across ``exec``).
    macOS: ``ru_maxrss``, in bytes there. Windows has no ``resource`` module; it reports
    the peak working set."""
    if sys.platform == "win32":
        return _windows_peak_bytes() / 2**20
    try:  # Linux: VmHWM belongs to this program alone; ru_maxrss keeps a parent's peak across exec
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
