"""Analyze the real ImageNet bank of tf_efficientnet_lite0 and the learned 8 universal keys against the keys, write
both reports, copy the figures to docs/figures/ and print the numbers quoted in the README.

    python examples/universal_analysis.py [--out outputs/analysis] [--figures docs/figures]
"""

import argparse
import shutil
from pathlib import Path

import torch

import masterkey
from masterkey.analysis import analyze_bank

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("outputs/analysis"))
parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
args = parser.parse_args()

# the ImageNet bank against the same architecture at random init (seed 0): what training changed, layer by layer
torch.manual_seed(0)
random_lite0 = masterkey.extract_filters("tf_efficientnet_lite0", pretrained=False, source_dataset="random init (seed 0)")
lite0 = analyze_bank("imagenet-lite0", out_dir=args.out / "imagenet-lite0", compare=random_lite0)
# the learned keys fitted with the idealized ones, compared with them
keys = analyze_bank(
    "universal-learned-8", out_dir=args.out / "universal-learned-8", compare="universal-idealized-8", keys="idealized"
)

args.figures.mkdir(parents=True, exist_ok=True)
for report, folder, prefix in ((lite0, "imagenet-lite0", "lite0_"), (keys, "universal-learned-8", "learned8_")):
    for name in report["figures"]:
        if name == "keys.png":
            shutil.copy(args.out / folder / name, args.figures / "keys_learned_vs_idealized.png")
        elif prefix == "lite0_" or name == "filters_first.png":
            shutil.copy(args.out / folder / name, args.figures / f"{prefix}{name}")

print("ImageNet tf_efficientnet_lite0: share of filters with R^2 >= t (random filters of that size in parentheses)")
for size, row in lite0["summary"]["by_kernel_size"].items():
    shares = ", ".join(
        f">= {t}: {v:.1%} ({lite0['chance'][size]['share_r2_at_least'][t]:.1%})"
        for t, v in row["share_r2_at_least"].items()
    )
    print(f"  {size} ({row['filters']} filters, {row['keys'][0]}, mean R^2 {row['r2_mean']:.3f}): {shares}")
whole = lite0["summary"]
print(
    f"  whole bank ({whole['filters']} filters): "
    + ", ".join(f">= {t}: {v:.1%}" for t, v in whole["share_r2_at_least"].items())
)
print("  generality by depth:")
for row in lite0["generality_by_depth"]:
    print(
        f"    {row['depth']:>6}: {row['filters']} filters, mean R^2 {row['r2_mean']:.3f}, R^2 >= 0.9 "
        f"{row['share_r2_at_least']['0.9']:.1%}, key entropy {row['key_usage_entropy']:.2f}, dominant key "
        f"{row['dominant_key']}, similarity to random init {row['similarity']:.2f}"
    )
print("  key usage (keys 1-8):", " ".join(f"{s:.1%}" for s in whole["key_share"]))
print("learned 8 keys fitted with the idealized ones:")
layer = keys["layers"][0]
print(
    f"  R^2 per key: {layer['r2_mean']:.3f} mean; correlation per key:",
    " ".join(f"{c:+.3f}" for c in keys["key_correlation"]),
)
print(f"  each learned key takes its own idealized key: {layer['key_usage'] == [1] * 8}")
print(f"figures in {args.figures}, reports in {args.out}")
