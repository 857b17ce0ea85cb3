"""Builds mux_kernels._C (the torch.ops.mux op library) with torch.utils.cpp_extension and ninja.

CppExtension on a CPU-only torch; CUDAExtension when torch has CUDA and a toolkit is found
(TORCH_CUDA_ARCH_LIST is honoured by cpp_extension). MUX_KERNELS_FORCE_CPU=1 forces the CPU build.
Torch is not a build requirement: install it first, then `pip install --no-build-isolation .`.
"""

import glob
import os
import platform

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # pragma: no cover - explains the one setup mistake users make
    raise SystemExit(
        "mux_kernels builds against the installed torch: install torch first (e.g. `pip install torch`), "
        "then `pip install --no-build-isolation .`"
    ) from exc


def cpu_flags() -> list[str]:
    """-O3, plus the widest at::vec code the build machine runs (AVX-512, else AVX2+FMA), as ATen
    picks at run time; MUX_KERNELS_NO_AVX2=1 builds portable code instead."""
    flags = ["-O3", "-std=c++17"]
    if platform.machine() not in ("x86_64", "AMD64") or os.environ.get("MUX_KERNELS_NO_AVX2"):
        return flags
    try:
        cpu = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return flags
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "f16c"} <= cpu:
        return flags + ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                        "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]
    if {"avx2", "fma", "f16c"} <= cpu:
        return flags + ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return flags


def openmp_flags() -> list[str]:
    """at::parallel_for is an inline template over `#pragma omp parallel` (ATen's OpenMP backend): an
    extension compiled without -fopenmp runs every parallel_for on one thread. With it, the .so needs
    libgomp.so.1, which resolves to the copy torch has already loaded."""
    return ["-fopenmp"] if platform.system() == "Linux" else []


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    use_cuda = (
        torch.version.cuda is not None and CUDA_HOME is not None and not os.environ.get("MUX_KERNELS_FORCE_CPU")
    )
    cxx = cpu_flags() + openmp_flags()
    link = openmp_flags()
    if use_cuda:
        # CUDA kernels are Triton (registered from Python); .cu sources, when present, build here.
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        return CUDAExtension("mux_kernels._C", sources, extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
                             extra_link_args=link)
    return CppExtension("mux_kernels._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
