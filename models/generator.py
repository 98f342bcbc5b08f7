"""The generator contract shared by every model of the zoo, and its part-control API.

Latents are W+ codes laid out in slots (paper Eq. 1): slot 0 is the shared base code
W^base; for part k (0-based class id) slot 1 + 2k is its shape code W_s^k and slot 2 + 2k its
texture code W_t^k. A part edit is therefore a swap of slots. A holistic model keeps the same
tensor layout for its own codes: it overrides `sample_latents` and `slots_of` (which slots an
edit of a part replaces), and its `forward` gives the slots their meaning (see models.ide3d).

`forward(w, cam2world, intrinsics, ...)` returns a dict of tensors:
    image        (B, 3, R, R)  high-resolution image in [-1, 1]
    mask         (B, K, R, R)  high-resolution mask: upsample(coarse mask) + residual
    mask_coarse  (B, K, r, r)  rendered mask at the feature resolution, softmax over parts
and, where the model has them: image_lr (B, 3, r, r), depth (B, 1, r, r) (expected ray
distance, head units), part_depth (B, K, r, r) (2D part depth maps, for regularisers),
raw_image (B, 3, r, r) and raw_mask (B, K, r, r) (the low-resolution render a dual
discriminator reads, models.discriminator).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

EDIT_WHAT = ("shape", "texture", "both")


def slot_count(num_parts: int) -> int:
    """Number of latent slots: the base code plus a shape and a texture code per part."""
    return 1 + 2 * num_parts


def part_slots(part: int, what: str = "both") -> list[int]:
    """Slots that hold part `part`'s shape and/or texture code."""
    if what not in EDIT_WHAT:
        raise ValueError(f"what={what!r}, expected one of {EDIT_WHAT}")
    slots = {"shape": [1 + 2 * part], "texture": [2 + 2 * part]}
    return slots["shape"] + slots["texture"] if what == "both" else slots[what]


class PartGenerator(nn.Module):
    """Base class of the zoo's generators: latent sampling and part-level control.

    Subclasses set `num_parts`, `w_dim`, a `mapping` module (z (N, z_dim) -> w (N, w_dim))
    with a `w_avg` buffer, and implement `forward`.
    """

    num_parts: int
    w_dim: int
    z_dim: int
    mapping: nn.Module

    def sample_latents(
        self,
        n: int,
        generator: torch.Generator | None = None,
        truncation: float = 1.0,
    ) -> torch.Tensor:
        """(n, S, w_dim) W+ latents: an independent z per slot through the mapping network."""
        device = next(self.parameters()).device
        z = torch.randn(n * slot_count(self.num_parts), self.z_dim, generator=generator)
        w = self.mapping(z.to(device)).view(n, slot_count(self.num_parts), self.w_dim)
        if truncation != 1.0:
            w = self.mapping.w_avg.lerp(w, truncation)
        return w

    def slots_of(self, part: int, what: str = "both") -> list[int]:
        """Slots that an edit of part `part`'s shape and/or texture replaces.

        The slot layout above; a holistic model overrides this with where its codes live.
        """
        return part_slots(part, what)

    def edit_part(
        self, w: torch.Tensor, part: int, w_new: torch.Tensor, what: str = "both"
    ) -> torch.Tensor:
        """Latents `w` with part `part`'s shape and/or texture code taken from `w_new`."""
        edited = w.clone()
        slots = self.slots_of(part, what)
        edited[:, slots] = w_new[:, slots]
        return edited

    def interpolate_parts(
        self,
        w_a: torch.Tensor,
        w_b: torch.Tensor,
        t: float,
        parts: Sequence[int] | None = None,
        what: str = "both",
    ) -> torch.Tensor:
        """Latents moved a fraction t from w_a toward w_b on the given parts only (Fig. 10).

        `parts=None` interpolates every slot, the base code included (whole-face interpolation).
        """
        if parts is None:
            return torch.lerp(w_a, w_b, t)
        out = w_a.clone()
        slots = sorted({slot for part in parts for slot in self.slots_of(part, what)})
        out[:, slots] = torch.lerp(w_a[:, slots], w_b[:, slots], t)
        return out
