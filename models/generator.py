"""The generator contract shared by every model of the zoo, and its part-control API.

Latents are W+ codes laid out in slots (paper Eq. 1): slot 0 is the shared base code W^base; for
part k (0-based class id) slot 1 + 2k is its shape code W_s^k and slot 2 + 2k its texture code
W_t^k. A part edit is therefore a swap of slots. Latents are sampled as SemanticStyleGAN trains
(`latent_sampling: shared`): one z per sample, mapped to one w that fills every slot, and in
training, with probability `mixing`, style mixing with a second w (SSGAN's `mix_styles`: per sample
and part, the shape and texture codes come from (w1, w1), (w1, w2) or (w2, w2), one of the three at
random; the base code stays w1). A holistic model keeps the same tensor layout for its own codes: it
overrides `sample_latents` and `slots_of` (which slots an edit of a part replaces), and its
`forward` gives the slots their meaning (see models.ide3d).

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

EDIT_WHAT = ("shape", "texture", "both")  # plus "part": the model's own `part_edit`


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
    with a `w_avg` buffer, and a `config` with `latent_sampling` (models.config.PartLatentConfig),
    and implement `forward`.
    """

    num_parts: int
    w_dim: int
    z_dim: int
    mapping: nn.Module
    # the codes an edit of one part replaces when asked for "the part's edit" (what="part"):
    # what this architecture localises to the part (docs/part-edits.md)
    part_edit: str = "both"

    def sample_latents(
        self,
        n: int,
        generator: torch.Generator | None = None,
        truncation: float = 1.0,
        mixing: float = 0.0,  # probability of style mixing for the batch (training: 0.3)
    ) -> torch.Tensor:
        """(n, S, w_dim) W+ latents, sampled as `config.latent_sampling` says (module docstring).

        "per_slot" (not in the paper) draws an independent z for every slot and ignores `mixing`.
        """
        device = next(self.parameters()).device
        slots = slot_count(self.num_parts)
        if self.config.latent_sampling == "per_slot":
            z = torch.randn(n * slots, self.z_dim, generator=generator)
            w = self.mapping(z.to(device)).view(n, slots, self.w_dim)
        else:
            mix = mixing > 0 and float(torch.rand((), generator=generator)) < mixing
            z = torch.randn(n * (2 if mix else 1), self.z_dim, generator=generator)
            codes = self.mapping(z.to(device))  # (n or 2n, w_dim): w1, then w2 when mixing
            w = codes[:n, None].repeat(1, slots, 1)  # (n, S, w_dim) w1 in every slot
            if mix:
                # per sample and part: 0 -> (w1, w1), 1 -> (w1, w2), 2 -> (w2, w2)
                choice = torch.randint(3, (n, self.num_parts, 1), generator=generator).to(device)
                w2 = codes[n:, None]  # (n, 1, w_dim)
                w[:, 1::2] = torch.where(choice == 2, w2, w[:, 1::2])  # shape codes W_s^k
                w[:, 2::2] = torch.where(choice >= 1, w2, w[:, 2::2])  # texture codes W_t^k
        if truncation != 1.0:
            w = self.mapping.w_avg.lerp(w, truncation)
        return w

    def slots_of(self, part: int, what: str = "both") -> list[int]:
        """Slots that an edit of part `part`'s shape and/or texture replaces.

        The slot layout above; a holistic model overrides this with where its codes live.
        """
        return part_slots(part, what)

    def edit_part(
        self, w: torch.Tensor, part: int, w_new: torch.Tensor, what: str = "part"
    ) -> torch.Tensor:
        """Latents `w` with part `part`'s codes taken from `w_new`: its shape and/or texture
        code, or for what="part" the codes of the model's localised edit (`part_edit`)."""
        edited = w.clone()
        slots = self.slots_of(part, self.part_edit if what == "part" else what)
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
