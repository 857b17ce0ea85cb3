"""Initial values of the multiplexers' fixed per-instance vectors and matrices (SPEC §2.2, §2.3).

Only the initial draw lives here: released models store these tensors as ``instance_embedding``
and loading a checkpoint must take them from it, never regenerate them (SPEC §5.4).
"""

from __future__ import annotations

from typing import Optional

import torch


def gaussian_vectors(
    num_instances: int, dim: int, norm: float = 1.0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``v_i = norm * g_i / ||g_i||`` with ``g_i ~ N(0, I)``: ``(N, d)``, every row of L2 norm ``norm``."""
    g = torch.randn(num_instances, dim, generator=generator)
    return norm * g / g.norm(dim=1, keepdim=True)


def chunk_bounds(num_instances: int, dim: int, epsilon: float = 0.0) -> list[tuple[int, int]]:
    """Instance i's contiguous coordinate block: ``d // N`` wide, the last block takes the remainder.

    ``epsilon`` widens every block by ``round(epsilon * d // N)`` coordinates on each side (clipped),
    so neighbours overlap. The reference mixes float and integer ends there (SPEC §2.3); this is
    the integer reading of it.
    """
    width = dim // num_instances
    if width == 0:
        raise ValueError(f"cannot split d = {dim} coordinates into {num_instances} non-empty chunks")
    widen = round(epsilon * width)
    bounds = []
    for i in range(num_instances):
        start, end = i * width, dim if i == num_instances - 1 else (i + 1) * width
        bounds.append((max(0, start - widen), min(dim, end + widen)))
    return bounds


def binary_chunk_masks(num_instances: int, dim: int, epsilon: float = 0.0) -> torch.Tensor:
    """``(N, d)`` 0/1 masks, instance i keeping its block of ``chunk_bounds``."""
    masks = torch.zeros(num_instances, dim)
    for i, (start, end) in enumerate(chunk_bounds(num_instances, dim, epsilon)):
        masks[i, start:end] = 1.0
    return masks


def haar_orthogonal(dim: int, generator: Optional[torch.Generator] = None, special: bool = False) -> torch.Tensor:
    """A Haar-random ``(d, d)`` orthogonal matrix: QR of a Gaussian, columns sign-fixed by ``diag(R)``.

    Without the sign fix QR is biased; with it the result is Haar on O(d) (as ``scipy.stats.ortho_group``).
    ``special=True`` flips one column when needed to land in SO(d) (``special_ortho_group``).
    """
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if special and torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def orthogonal_matrices(num_instances: int, dim: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(N, d, d)`` independent Haar orthogonal matrices (``random_ortho``)."""
    return torch.stack([haar_orthogonal(dim, generator) for _ in range(num_instances)])


def low_rank_orthogonal_matrices(
    num_instances: int, dim: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``(N, d, d)`` rank-``d/N`` maps ``W_i = U (H masked to column block i)^T`` (``random_ortho_low_rank``).

    U and H are Haar on SO(d); the column blocks are those of ``chunk_bounds``, so the N maps read
    orthogonal subspaces and together make one orthogonal matrix.
    """
    u = haar_orthogonal(dim, generator, special=True)
    h = haar_orthogonal(dim, generator, special=True)
    matrices = []
    for start, end in chunk_bounds(num_instances, dim):
        block = torch.zeros_like(h)
        block[:, start:end] = h[:, start:end]
        matrices.append(u @ block.T)
    return torch.stack(matrices)
