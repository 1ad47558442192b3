"""benchmarks/cpu_features.py: the int8 instruction sets `make bench` prints, read from /proc/cpuinfo."""

import pytest

from benchmarks.cpu_features import cpu_features


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse2 avx avx2 fma", "AMD EPYC: AVX2; no AVX-512, no VNNI"),
        ("avx2 avx512f avx512bw", "AMD EPYC: AVX-512, AVX2; no VNNI"),
        ("avx2 avx512f avx512_vnni amx_int8", "AMD EPYC: AMX-INT8, AVX-512 VNNI, AVX-512, AVX2"),
        ("avx2 avx_vnni", "AMD EPYC: AVX-VNNI, AVX2; no AVX-512"),
        ("sse2", "AMD EPYC: none of AVX2, AVX-512, VNNI; no AVX-512, no VNNI"),
    ],
)
def test_the_line_names_what_int8_speed_depends_on(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_features(cpuinfo) == expected


def test_a_machine_without_proc_cpuinfo_says_so(tmp_path):
    assert "instruction sets unknown" in cpu_features(tmp_path / "missing")
