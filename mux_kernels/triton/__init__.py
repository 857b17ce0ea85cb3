"""Triton kernels for torch.ops.mux (filled in by the Triton issue)."""


def register(device_type: str) -> None:
    pass
