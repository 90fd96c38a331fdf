"""Time to extract, save, load and inject a filter bank, and its size against the full model's state dict.

    python benchmarks/bank_io.py [--repeats 5]

Random init is fine: the timings do not depend on the values. Loading reads only filters.safetensors and
config.json, never a model checkpoint.
"""

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch

import masterkey


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def state_dict_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["convnext_tiny", "tf_efficientnet_lite0"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads; best / median of {args.repeats}")
    print(f"{'model':24} {'step':8} {'best ms':>9} {'median ms':>10}")
    for name in args.models:
        model = timm.create_model(name)
        target = timm.create_model(name)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "bank"
            steps = {
                "extract": lambda: masterkey.extract_filters(model),
                "save": lambda: bank.save_pretrained(folder),
                "load": lambda: masterkey.load_master_filters(folder),
                "inject": lambda: masterkey.from_pretrained_filters(target, loaded),
            }
            bank = masterkey.extract_filters(model)
            bank.save_pretrained(folder)
            loaded = masterkey.load_master_filters(folder)
            for step, fn in steps.items():
                best, median, _ = best_of(args.repeats, fn)
                print(f"{name:24} {step:8} {best * 1e3:9.1f} {median * 1e3:10.1f}")
            bank_bytes = (folder / "filters.safetensors").stat().st_size
        full = state_dict_bytes(model)
        print(f"{name:24} size     bank {bank_bytes / 1e6:.2f} MB vs state dict {full / 1e6:.2f} MB "
              f"({100 * bank_bytes / full:.2f}%), {len(bank)} kernels, {bank.num_parameters:,} parameters")


if __name__ == "__main__":
    main()
