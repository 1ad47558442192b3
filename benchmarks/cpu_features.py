"""The CPU's instruction sets that int8 speed depends on, as `make bench` prints them (from /proc/cpuinfo)."""

import platform
from pathlib import Path

# Flags in the order they matter to ONNX Runtime's int8 kernels: AMX and VNNI multiply-add int8 in one
# instruction; without VNNI, AVX-512 and AVX2 need three (u8 x s8 pairs summed in 16 bits, then widened).
INT8_FLAGS = {
    "amx_int8": "AMX-INT8",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512f": "AVX-512",
    "avx2": "AVX2",
}


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """One line: the CPU's model name and which of INT8_FLAGS it has, e.g. "AMD EPYC: AVX2; no AVX-512, no VNNI"."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return f"{platform.processor() or platform.machine()}: instruction sets unknown (no {cpuinfo})"
    fields = dict(
        (key.strip(), value.strip()) for key, _, value in (line.partition(":") for line in text.splitlines()) if _
    )
    flags = set(fields.get("flags", "").split())
    has = [name for flag, name in INT8_FLAGS.items() if flag in flags]
    missing = [] if "avx512f" in flags else ["no AVX-512"]
    missing += [] if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else ["no VNNI"]
    return f"{fields.get('model name', platform.machine())}: {', '.join(has) or 'none of AVX2, AVX-512, VNNI'}" + (
        f"; {', '.join(missing)}" if missing else ""
    )
