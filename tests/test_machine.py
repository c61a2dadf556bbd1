"""caecodec.machine: load average and peak memory, the same call on every system."""
import subprocess
import sys

from caecodec import machine


def test_peak_memory_grows_when_a_process_holds_more():
    code = ("import sys; sys.path.insert(0, {root!r}); from caecodec.machine import peak_rss_mib; "
            "before = peak_rss_mib(); block = bytearray(200 * 2**20); block[::4096] = b'x' * len(block[::4096]); "
            "print(before, peak_rss_mib())")
    from caecodec import paths
    out = subprocess.run([sys.executable, "-c", code.format(root=str(paths.PACKAGE_DIR.parent))],
                         capture_output=True, text=True, check=True).stdout.split()
    before, after = map(float, out)
    assert 1 < before < 2000          # a bare Python process: a few MiB, never gigabytes
    assert 180 < after - before < 260  # the 200 MiB block, in MiB (not KiB or bytes)


def test_load_average_is_a_number_or_none(monkeypatch):
    value = machine.load_average()
    assert value is None or value >= 0
    monkeypatch.delattr(machine.os, "getloadavg")  # as on Windows
    assert machine.load_average() is None
