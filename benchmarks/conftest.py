"""Shared setup of the benchmark suites: mode, thread count, shapes and dtypes, copy bandwidth.

    pytest benchmarks/ [--bench-mode quick|full] [--benchmark-json out.json]

``MUX_BENCH_THREADS`` sets torch's intra-op thread count (default 2, the foundation issue's
targets). ``mux-kernels bench`` runs this and writes the report.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

import pytest
import torch

import harness


def pytest_addoption(parser):
    parser.addoption(
        "--bench-mode",
        choices=("quick", "full"),
        default="quick",
        help="quick: the foundation shapes and a small model (minutes); full: the whole sweep and BERT-base",
    )


LOAD_AT_START = pytest.StashKey[float]()


def pytest_configure(config):
    config.stash[LOAD_AT_START] = os.getloadavg()[0]
    torch.set_num_threads(int(os.environ.get("MUX_BENCH_THREADS", "2")))
    # One compile per (function, shape, dtype): never fall back to eager after the default 8 recompiles.
    torch._dynamo.config.recompile_limit = 1024
    # Backward is timed through a retained graph; donated buffers would forbid retain_graph=True.
    torch._functorch.config.donated_buffer = False


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        metafunc.parametrize("shape", harness.op_shapes(metafunc.config.getoption("bench_mode")), ids=str)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", harness.DTYPES, ids=lambda dt: str(dt).removeprefix("torch."))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def pytest_benchmark_update_machine_info(config, machine_info):
    import mux_kernels

    machine_info["mux_kernels"] = {
        "mode": config.getoption("bench_mode"),
        "device": harness.DEVICE.type,
        "gpu": torch.cuda.get_device_name() if harness.DEVICE.type == "cuda" else None,
        "cpu": machine_info.get("cpu", {}).get("brand_raw") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "mux_kernels": mux_kernels.__version__,
        "backends": mux_kernels.active_backends(),
        "load_average": [config.stash[LOAD_AT_START], os.getloadavg()[0]],  # 1-minute, at start and end
    }


@pytest.fixture(scope="session")
def budget_s(pytestconfig) -> float:
    """Timed seconds per case."""
    return harness.BUDGET_S[pytestconfig.getoption("bench_mode")]


@pytest.fixture(scope="session")
def copy_gbps() -> float:
    """Copy bandwidth measured once per session, on the device and thread count of the run."""
    return harness.copy_bandwidth_gbps()
