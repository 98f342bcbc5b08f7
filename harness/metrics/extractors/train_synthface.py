"""Train `synthface-v1` on the synthetic portraits and write its weights.

    python -m harness.metrics.extractors.train_synthface \
        --out harness/metrics/extractors/synthface-v1.pt

Reproducible: fixed seeds, a deterministic batch order and deterministic augmentation (small
colour jitter, sensor noise and a shift of a couple of pixels). Trains an ArcFace head over the
identities of split "train" of `ensure_synthetic(identities, views, 64, seed)`; the identities
of split "val" are held out and only used for the reported verification AUC. The defaults take a
few minutes on two CPU cores (plus the one-off rendering of the data set, which is cached).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.prepared import read_meta
from harness.data.synthetic import ensure_synthetic
from harness.errors import UserError
from harness.io import atomic_torch_save
from harness.metrics.extractors.synthface import INPUT_SIZE, NAME, ArcFaceHead, SynthFaceNet

log = logging.getLogger(__name__)


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


def load_split(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, R, R) and identity ids (N,) of one split of a prepared dataset."""
    split_ids = np.load(path / "split.npy")
    selected = np.flatnonzero(split_ids == (1 if split == "val" else 0))
    images = np.load(path / "images.npy", mmap_mode="r")[selected]
    identity = np.load(path / "identity.npy")[selected]
    return (
        torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(identity.astype(np.int64)),
    )


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Light augmentation of uint8 images -> float in [-1, 1]: colour jitter, noise, shift."""
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


def train(args: argparse.Namespace, argv: list[str]) -> dict:
    """Train the network per `args` (parsed from `argv`); the checkpoint (written to `args.out`)."""
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_path = ensure_synthetic(args.identities, args.views, INPUT_SIZE, args.data_seed)
    meta = read_meta(data_path)
    images, identity = load_split(data_path, "train")
    val_images, val_identity = load_split(data_path, "val")
    classes, labels = torch.unique(identity, return_inverse=True)
    log.info(
        "data %s: %d train images of %d identities, %d val images of %d identities",
        data_path, len(images), len(classes), len(val_images), len(torch.unique(val_identity)),
    )
    net = SynthFaceNet()
    head = ArcFaceHead(net.arch["embedding_dim"], len(classes), args.scale, args.margin)
    params = list(net.parameters()) + list(head.parameters())
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
        x = augment(images[batch], generator)
        _, embedding = net(x)
        margin = args.margin * min(1.0, step / max(1, args.margin_warmup * args.iterations))
        logits = head(embedding, labels[batch], margin=margin)
        loss = F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % args.log_every == 0 or step == args.iterations - 1:
            accuracy = (logits.argmax(1) == labels[batch]).float().mean().item()
            log.info(
                "step %d/%d loss %.3f acc %.3f margin %.2f lr %.2e (%.0f s)", step,
                args.iterations, loss.item(), accuracy, margin, scheduler.get_last_lr()[0],
                time.time() - start,
            )
    net.eval()
    val_auc = verification_auc(net.embed(val_images), val_identity)
    seen = slice(0, 4 * len(val_images))  # a subset of the training identities, for contrast
    train_auc = verification_auc(net.embed(images[seen]), identity[seen])
    log.info("verification AUC: held-out identities %.4f, training identities %.4f",
             val_auc, train_auc)
    checkpoint = {
        "name": NAME,
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
        "train_seconds": time.time() - start,
        "torch": str(torch.__version__),
    }
    atomic_torch_save(args.out, checkpoint)
    log.info("wrote %s (%.1f MB)", args.out, Path(args.out).stat().st_size / 1e6)
    return checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--identities", type=int, default=600)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and order")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--scale", type=float, default=30.0, help="ArcFace scale s")
    parser.add_argument("--margin", type=float, default=0.3, help="ArcFace margin m (radians)")
    parser.add_argument("--margin-warmup", type=float, default=0.2,
                        help="fraction of training over which the margin ramps up from 0")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: default)")
    parser.add_argument("--log-every", type=int, default=50)
    return parser.parse_args(argv)


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
