"""mux_kernels: fused multiplexing / demultiplexing kernels for data-multiplexed language models.

Importing the package registers ``torch.ops.mux.*``: schemas and CPU kernels from the C++
extension, and the Triton kernels for CUDA when Triton is installed. ``MUX_KERNELS_BACKEND=triton``
also routes CPU tensors through the Triton launchers (with ``TRITON_INTERPRET=1``), which is how
the Triton code is tested on machines without a GPU.
"""

from . import ops
from .backend import active_backends
from .ops import demultiplex, multiplex, multiplex_embeddings

__all__ = ["multiplex", "multiplex_embeddings", "demultiplex", "active_backends", "ops"]
__version__ = "0.1.0"
