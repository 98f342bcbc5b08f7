"""Train a synthface network on the synthetic portraits and write its weights.

    OMP_NUM_THREADS=1 python -m harness.metrics.extractors.train_synthface --version v2 \
        --threads 1 --out harness/metrics/extractors/synthface-v2.pt
    python -m harness.metrics.extractors.train_synthface --version v1 \
        --out harness/metrics/extractors/synthface-v1.pt

Reproducible: fixed seeds, a deterministic batch order and deterministic augmentation. Both
versions train an ArcFace head over the identities of split "train" of
`ensure_synthetic(identities, views, 64, data_seed)` (v2 also uses its 32x32 render); the
identities of split "val" are held out and only used for the reported numbers. `--version`
picks the defaults of the other flags (`PRESETS`); any flag given on the command line wins.

- v1: ArcFace only, with colour jitter, sensor noise and a shift of a couple of pixels.
- v2: multi-task (the architecture is `SynthFaceNet` with `code_dim` 64). The code feeds a
  decoder that reconstructs the 13-class mask (class-balanced cross-entropy), the depth and the
  RGB image at 32x32 (L1) and a linear head that regresses yaw and pitch; the dense part head
  is trained against the same masks (class-balanced cross-entropy). Half of each batch is the
  64x64 render, half the 32x32 render of the same views upsampled as at evaluation time (the
  cpu preset renders 32x32); half is mirrored. No colour, noise or blur augmentation: the
  features are meant to see such changes. Afterwards the batch-norm statistics are recomputed
  over the whole training split (so the FID feature is standardised on it), and the held-out
  mask mIoU and verification AUC are recorded in the checkpoint.

With the defaults v2 trained in 1,107 s on a shared two-core machine and v1 in 284 s on two
cores (each checkpoint records its `train_seconds`), plus the one-off rendering of the data set,
which is cached.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.data.classes import NUM_CLASSES
from harness.data.prepared import read_meta
from harness.data.synthetic import ensure_synthetic
from harness.errors import UserError
from harness.io import atomic_torch_save
from harness.metrics.extractors.synthface import (
    INPUT_SIZE,
    ArcFaceHead,
    SynthFaceNet,
    to_network_input,
)

log = logging.getLogger(__name__)

# Per version: the defaults of the command-line flags (a flag given explicitly wins).
PRESETS: dict[str, dict[str, Any]] = {
    "v1": {"identities": 600, "data_seed": 0, "iterations": 1500, "batch_size": 64, "code_dim": 0,
           "threads": 2},
    "v2": {"identities": 2000, "data_seed": 1, "iterations": 1500, "batch_size": 48,
           "code_dim": 64, "threads": 1},
}
TARGET_SIZE = 32  # pixels: v2's decoder reconstructs masks, depth and RGB at this side


def verification_auc(embeddings: torch.Tensor, identities: torch.Tensor) -> float:
    """ROC AUC of cosine similarity separating same-identity pairs from different ones.

    Uses all unordered pairs and the rank-sum (Mann-Whitney) formula with average ranks for ties.
    """
    emb = F.normalize(embeddings.double(), dim=1)
    sim = emb @ emb.t()
    i, j = torch.triu_indices(len(emb), len(emb), offset=1)
    scores = sim[i, j]
    same = identities[i] == identities[j]
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need both same-identity and different-identity pairs")
    order = np.argsort(scores.numpy(), kind="mergesort")
    sorted_scores = scores.numpy()[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average ranks over ties (1-based)
    start = 0
    while start < len(sorted_scores):
        stop = start
        while stop + 1 < len(sorted_scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    rank_sum = ranks[same.numpy()].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def load_split(path: Path, split: str, names: tuple[str, ...] = ("images", "identity")
               ) -> tuple[torch.Tensor, ...]:
    """Arrays `names` of one split of a prepared dataset, as tensors.

    images: uint8 (N, 3, R, R); identity: int64 (N,); masks: int64 (N, R, R); depth: float32
    (N, R, R); angles: float32 (N, 2).
    """
    split_ids = np.load(path / "split.npy")
    selected = np.flatnonzero(split_ids == (1 if split == "val" else 0))
    out = []
    for name in names:
        array = np.ascontiguousarray(np.load(path / f"{name}.npy", mmap_mode="r")[selected])
        tensor = torch.from_numpy(array)
        if name == "images":
            tensor = tensor.permute(0, 3, 1, 2).contiguous()
        elif name in ("identity", "masks"):
            tensor = tensor.long()
        else:
            tensor = tensor.float()
        out.append(tensor)
    return tuple(out)


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """v1's light augmentation of uint8 images -> float in [-1, 1]: colour jitter, noise, shift."""
    n = len(images)
    x = images.float() / 127.5 - 1.0

    def uniform(*shape: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * (high - low) + low

    gain = uniform(n, 1, 1, 1, low=0.9, high=1.1) * uniform(n, 3, 1, 1, low=0.95, high=1.05)
    offset = uniform(n, 1, 1, 1, low=-0.05, high=0.05) + uniform(n, 3, 1, 1, low=-0.03, high=0.03)
    x = x * gain + offset
    x = x + torch.randn(x.shape, generator=generator) * uniform(n, 1, 1, 1, low=0.0, high=0.04)
    if max_shift:
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        shifts = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
        size = x.shape[-1]
        x = torch.stack(
            [padded[k, :, dy : dy + size, dx : dx + size] for k, (dy, dx) in enumerate(shifts)]
        )
    return x.clamp(-1.0, 1.0)


def _up(cin: int, cout: int) -> nn.Sequential:
    """x2 nearest upsampling, 3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class Decoder(nn.Module):
    """v2's training-only decoder: code (N, D) -> (mask logits (N, 13, 32, 32), depth (N, 32,
    32), RGB (N, 3, 32, 32)) and yaw/pitch (N, 2)."""

    def __init__(self, code_dim: int, widths: tuple[int, ...] = (128, 64, 32, 16)):
        super().__init__()
        self.start = widths[0]
        self.fc = nn.Sequential(nn.Linear(code_dim, widths[0] * 4 * 4), nn.ReLU(inplace=True))
        self.up = nn.Sequential(*[_up(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.out = nn.Conv2d(widths[-1], NUM_CLASSES + 1 + 3, 1)
        self.pose = nn.Linear(code_dim, 2)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(mask logits, depth, rgb, pose) of codes."""
        x = self.up(self.fc(code).view(len(code), self.start, 4, 4))  # (N, C, 32, 32)
        out = self.out(x)  # (N, 13 + 1 + 3, 32, 32)
        return out[:, :NUM_CLASSES], out[:, NUM_CLASSES], out[:, NUM_CLASSES + 1 :], self.pose(code)


class MultiViewData:
    """v2's training data: the 64x64 and the 32x32 render of the same views, with targets.

    Targets are at 32x32: mask (class ids), standardised depth, RGB in [-1, 1]; and the
    standardised (yaw, pitch).
    """

    def __init__(self, identities: int, views: int, seed: int, split: str):
        path64 = ensure_synthetic(identities, views, INPUT_SIZE, seed)
        path32 = ensure_synthetic(identities, views, TARGET_SIZE, seed)
        self.meta = read_meta(path64)
        self.images64, self.identity, angles = load_split(
            path64, split, ("images", "identity", "angles"))
        self.images32, self.masks, depth, angles32 = load_split(
            path32, split, ("images", "masks", "depth", "angles"))
        if not torch.equal(angles, angles32):
            raise UserError(f"{path64} and {path32} do not hold the same views; delete both")
        self.depth = (depth - depth.mean()) / depth.std()  # (N, 32, 32)
        centre, scale = angles.mean(0), angles.std(0)
        self.angles = (angles - centre) / scale  # (N, 2)
        # Mirroring maps yaw to pi - yaw (models.camera): standardised, a -> this - a.
        self.yaw_mirror = float((math.pi - 2 * centre[0]) / scale[0])
        frequency = torch.bincount(self.masks.flatten(), minlength=NUM_CLASSES).double()
        frequency = frequency / frequency.sum()
        weight = (frequency + 1e-4) ** -0.5  # class-balanced, between uniform and inverse
        self.class_weight = (weight / (weight * frequency).sum()).float()  # pixel mean 1

    def __len__(self) -> int:
        return len(self.identity)

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Inputs (N, 3, 64, 64) in [-1, 1] and targets of samples `index`."""
        n = len(index)
        low = torch.rand(n, generator=generator) < 0.5  # use the 32x32 render
        flip = torch.rand(n, generator=generator) < 0.5
        x = to_network_input(self.images64[index])
        if low.any():
            x[low] = to_network_input(self.images32[index[low]])
        rgb = self.images32[index].float() / 127.5 - 1.0
        mask, depth = self.masks[index], self.depth[index]
        angles = self.angles[index].clone()
        x[flip], rgb[flip] = x[flip].flip(-1), rgb[flip].flip(-1)
        mask[flip], depth[flip] = mask[flip].flip(-1), depth[flip].flip(-1)
        angles[flip, 0] = self.yaw_mirror - angles[flip, 0]
        return {"x": x, "mask": mask, "depth": depth, "rgb": rgb, "angles": angles,
                "identity": self.identity[index]}


def recompute_batch_norm(net: SynthFaceNet, decoder: Decoder, inputs: list[torch.Tensor]
                         ) -> None:
    """Batch-norm running statistics of `net` and `decoder` as exact averages over `inputs`
    (each a batch)."""
    modules = nn.ModuleList([net, decoder])
    norms = [m for m in modules.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    modules.train()
    for m in modules.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        for x in inputs:
            decoder(net.outputs(x)["code"])
    for m in norms:
        m.momentum = 0.1
    modules.eval()


def mask_miou(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over present classes of the intersection over union of argmax masks."""
    predicted = logits.argmax(1)
    ious = []
    for k in range(NUM_CLASSES):
        union = ((predicted == k) | (target == k)).sum()
        if union > 0:
            ious.append(float(((predicted == k) & (target == k)).sum() / union))
    return float(np.mean(ious))


def train(args: argparse.Namespace, argv: list[str]) -> dict:
    """Train the network per `args` (parsed from `argv`); the checkpoint (written to `args.out`)."""
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    multitask = args.version == "v2"
    if multitask:
        data = MultiViewData(args.identities, args.views, args.data_seed, "train")
        meta, images, identity = data.meta, data.images64, data.identity
        val = MultiViewData(args.identities, args.views, args.data_seed, "val")
        val_images, val_identity = val.images64, val.identity
    else:
        data_path = ensure_synthetic(args.identities, args.views, INPUT_SIZE, args.data_seed)
        meta = read_meta(data_path)
        images, identity = load_split(data_path, "train")
        val_images, val_identity = load_split(data_path, "val")
    classes, labels = torch.unique(identity, return_inverse=True)
    log.info(
        "data %s: %d train images of %d identities, %d val images of %d identities",
        meta["content_hash"], len(images), len(classes), len(val_images),
        len(torch.unique(val_identity)),
    )
    net = SynthFaceNet(code_dim=args.code_dim)
    head = ArcFaceHead(net.arch["embedding_dim"], len(classes), args.scale, args.margin)
    params = list(net.parameters()) + list(head.parameters())
    decoder = Decoder(args.code_dim) if multitask else None
    if decoder is not None:
        params += list(decoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, args.iterations // 20)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, args.iterations - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(images), generator=generator)
    cursor = 0
    start = time.time()
    net.train()
    for step in range(args.iterations):
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=generator), 0
        batch = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        parts: dict[str, torch.Tensor] = {}
        if decoder is None:
            x = augment(images[batch], generator)
        else:
            targets = data.batch(batch, generator)
            x = targets["x"]
        out = net.outputs(x)
        margin = args.margin * min(1.0, step / max(1, args.margin_warmup * args.iterations))
        logits = head(out["embedding"], labels[batch], margin=margin)
        loss = F.cross_entropy(logits, labels[batch])
        if decoder is not None:
            mask, depth, rgb, pose = decoder(out["code"])
            parts = {
                "id": loss,
                "parts": F.cross_entropy(out["parts"], targets["mask"], weight=data.class_weight),
                "mask": F.cross_entropy(mask, targets["mask"], weight=data.class_weight),
                "depth": F.l1_loss(depth, targets["depth"]),
                "rgb": F.l1_loss(rgb, targets["rgb"]),
                "pose": F.mse_loss(pose, targets["angles"]),
            }
            loss = args.id_weight * parts["id"] + sum(
                value for name, value in parts.items() if name != "id")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % args.log_every == 0 or step == args.iterations - 1:
            accuracy = (logits.argmax(1) == labels[batch]).float().mean().item()
            log.info(
                "step %d/%d loss %.3f acc %.3f margin %.2f lr %.2e%s (%.0f s)", step,
                args.iterations, loss.item(), accuracy, margin, scheduler.get_last_lr()[0],
                "".join(f" {name} {value.item():.3f}" for name, value in parts.items()),
                time.time() - start,
            )
    extra: dict[str, Any] = {}
    if decoder is not None:
        # Exact batch-norm statistics over the training split at both input resolutions, so the
        # code is standardised on the training data.
        chunks = [to_network_input(part[i : i + 256]) for part in (data.images64, data.images32)
                  for i in range(0, len(data), 256)]
        recompute_batch_norm(net, decoder, chunks)
        with torch.no_grad():
            val_out = net.outputs(val.images32)
            extra["val_miou_parts_32px"] = mask_miou(val_out["parts"], val.masks)
            extra["val_miou_code_32px"] = mask_miou(decoder(val_out["code"])[0], val.masks)
        log.info("held-out mask mIoU (32x32 inputs): dense head %.3f, decoded from the code %.3f",
                 extra["val_miou_parts_32px"], extra["val_miou_code_32px"])
    net.eval()
    val_auc = verification_auc(net.embed(val_images), val_identity)
    seen = slice(0, 4 * len(val_images))  # a subset of the training identities, for contrast
    train_auc = verification_auc(net.embed(images[seen]), identity[seen])
    log.info("verification AUC: held-out identities %.4f, training identities %.4f",
             val_auc, train_auc)
    name = f"synthface-{args.version}"
    checkpoint = {
        "name": name,
        "arch": net.arch,
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "command": " ".join(["python -m harness.metrics.extractors.train_synthface", *argv]),
        "args": json.dumps(vars(args), default=str),
        "dataset": {
            "content_hash": meta["content_hash"],
            "identities": args.identities,
            "views": args.views,
            "resolution": INPUT_SIZE,
            "seed": args.data_seed,
        },
        "val_auc": val_auc,
        **extra,
        "train_seconds": time.time() - start,
        "torch": str(torch.__version__),
    }
    atomic_torch_save(args.out, checkpoint)
    log.info("wrote %s (%.1f MB)", args.out, Path(args.out).stat().st_size / 1e6)
    return checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; unset flags take the defaults of `--version` (PRESETS)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--version", choices=sorted(PRESETS), default="v2",
                        help="v2: multi-task (the default); v1: ArcFace only")
    parser.add_argument("--identities", type=int, help="synthetic identities (v1 600, v2 2000)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--iterations", type=int, help="optimiser steps (v1 1500, v2 1500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and order")
    parser.add_argument("--data-seed", type=int, help="seed of the synthetic data (v1 0, v2 1)")
    parser.add_argument("--code-dim", type=int, help="v2: FID feature dimension (v2 64)")
    parser.add_argument("--id-weight", type=float, default=1.0,
                        help="v2: weight of the ArcFace loss beside the dense losses")
    parser.add_argument("--batch-size", type=int, help="images per step (v1 64, v2 48)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--scale", type=float, default=30.0, help="ArcFace scale s")
    parser.add_argument("--margin", type=float, default=0.3, help="ArcFace margin m (radians)")
    parser.add_argument("--margin-warmup", type=float, default=0.2,
                        help="fraction of training over which the margin ramps up from 0")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (0: torch's default; v1 2, v2 1)")
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.version].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.version == "v1" and args.code_dim:
        parser.error("--code-dim is a v2 flag (v1's feature is the pooled last stage)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        train(args, argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
