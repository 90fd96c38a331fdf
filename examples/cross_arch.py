"""Cross-architecture transfer of master-key filters: the ImageNet ``tf_efficientnet_lite0`` bank injected, frozen,
into a different architecture, against the same architecture trained from scratch and with frozen random filters.

Three arms share everything but the depthwise kernels (same seed, same initialisation of every other weight, same
data order):

- ``scratch``: every parameter trains;
- ``random-frozen``: the model's own random depthwise kernels, frozen;
- ``imagenet-lite0-frozen``: the 16 ImageNet kernels of EfficientNet-Lite0 mapped onto the target's depthwise convs
  with ``mapping="depth"`` (channels selected evenly, kernels cropped or padded), frozen;
- ``imagenet-lite0-universal-frozen`` (only with ``--arms``): the same, but kernels of another size are re-rendered
  from their best universal master key (``resize="universal"``).

The data is Animal-MNIST (10 classes of 28x28 grey animal drawings, the ``animal-mnist`` PyPI package) or sklearn's
8x8 ``digits``, upsampled and repeated to three channels. A plain PyTorch loop (AdamW, cosine schedule) keeps the
example self-contained.

    python examples/cross_arch.py --model mobilenetv3_small_100 --dataset animal-mnist --seeds 0 1 2 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import masterkey
from masterkey.sources import imagenet_lite0_bank
from masterkey.training import BUILTIN_DATASETS

ARMS = ("scratch", "random-frozen", "imagenet-lite0-frozen", "imagenet-lite0-universal-frozen")


def load_images(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images as float ``(n, 1, h, w)`` in ``[0, 1]`` and integer labels, from masterkey's built-in datasets
    (their loader reads the animal-mnist pickles with an unpickler that accepts numpy arrays only)."""
    images, labels = BUILTIN_DATASETS[dataset].load()
    return torch.from_numpy(images).float()[:, None] / 255.0, torch.from_numpy(labels).long()


def make_splits(
    dataset: str, *, train_size: int, test_size: int, resolution: int
) -> tuple[TensorDataset, TensorDataset]:
    """A fixed (seed 0) train/test split, resized to ``resolution`` and normalised with the training statistics."""
    images, labels = load_images(dataset)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    if train_size + test_size > len(order):
        raise SystemExit(f"{dataset} has {len(order)} images; --train-size + --test-size asks for more.")
    images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    train, test = order[:train_size], order[train_size : train_size + test_size]
    mean, std = images[train].mean(), images[train].std()
    images = ((images - mean) / std).expand(-1, 3, -1, -1).contiguous()
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def build_model(
    arm: str, *, model_name: str, num_classes: int, seed: int, bank: masterkey.FilterBank
) -> torch.nn.Module:
    torch.manual_seed(seed)  # same initialisation of every other weight in all three arms
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    if arm == "random-frozen":
        masterkey.freeze_depthwise(model)
    elif arm == "imagenet-lite0-frozen":
        masterkey.from_pretrained_filters(model, bank, mapping="depth")
    elif arm == "imagenet-lite0-universal-frozen":
        masterkey.from_pretrained_filters(model, bank, mapping="depth", resize="universal")
    return model


def train_and_evaluate(model, train, test, *, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """Train with AdamW and a cosine schedule; return the test accuracy after the last epoch."""
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=256):
            correct += (model(x).argmax(-1) == y).sum().item()
    return correct / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv3_small_100", help="timm architecture receiving the bank")
    parser.add_argument("--dataset", choices=("animal-mnist", "digits"), default="animal-mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:3]))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (more only helps on idle cores)")
    parser.add_argument("--out", default="outputs/cross_arch.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    sizes = {"train_size": args.train_size, "test_size": args.test_size, "resolution": args.resolution}
    train, test = make_splits(args.dataset, **sizes)
    num_classes = int(train.tensors[1].max()) + 1
    bank = imagenet_lite0_bank()
    preview = build_model("imagenet-lite0-frozen", model_name=args.model, num_classes=num_classes, seed=0, bank=bank)
    print(preview.masterkey_report, end="\n\n")

    results: dict[str, list[float]] = {arm: [] for arm in args.arms}
    start = time.time()
    for seed in args.seeds:
        for arm in args.arms:
            model = build_model(arm, model_name=args.model, num_classes=num_classes, seed=seed, bank=bank)
            accuracy = train_and_evaluate(
                model, train, test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed
            )
            results[arm].append(accuracy)
            print(f"seed {seed}  {arm:<31} test accuracy {accuracy:.4f}  ({time.time() - start:.0f}s)", flush=True)

    rows = ["| arm | test accuracy, mean ± std | per seed |", "|---|---|---|"]
    for arm, accs in results.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append(f"| {arm} | {statistics.mean(accs):.4f} ± {spread:.4f} | {', '.join(f'{a:.4f}' for a in accs)} |")
    print(f"\n{args.model} on {args.dataset} ({args.train_size} train / {args.test_size} test, {args.resolution}px, "
          f"{args.epochs} epochs, seeds {args.seeds})\n" + "\n".join(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
