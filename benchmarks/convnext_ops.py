"""Where ConvNeXt's CPU training step goes beyond what masterkey speeds up: its 1x1 convs and GELU.

    python benchmarks/convnext_ops.py [--model convnext_atto] [--resolution 64] [--batch_size 64] [--threads 1]

For every distinct 1x1 conv of the model (shapes taken from a forward pass in channels_last), forward and backward
(input, weight and bias gradients) by torch's convolution (oneDNN on CPU) against the same computation as a matrix
product on the channels_last activations (``F.linear`` on the permuted view: no copy), median of 7; and GELU, exact
and tanh-approximated, against ReLU and a multiply on the largest activation a GELU sees. Weighted by how often each
shape occurs, the totals say whether computing the 1x1 convs as matrix products would speed the step up (on this
machine it did not) and what GELU costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def median_ms(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def pointwise_shapes(model: torch.nn.Module, images: torch.Tensor) -> Counter:
    """(input shape, output channels, has bias) of every 1x1 stride-1 ungrouped conv, counted."""
    shapes, hooks = Counter(), []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
            hooks.append(module.register_forward_hook(lambda m, i, o: shapes.update(
                [(tuple(i[0].shape), m.out_channels, m.bias is not None)])))  # fmt: skip
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10).to(memory_format=torch.channels_last)
    images = torch.randn(args.batch_size, 3, args.resolution, args.resolution).contiguous(
        memory_format=torch.channels_last)  # fmt: skip
    shapes = pointwise_shapes(model, images)
    print(f"{args.model}, {args.resolution} px, batch {args.batch_size}, {args.threads} thread(s), torch "
          f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}; ms, median of 7")
    print(f"\n{'1x1 conv input':<22} {'out':>5} {'count':>5} {'conv ms':>8} {'matmul ms':>9} "
          f"{'conv/matmul':>11}")
    total_conv = total_matmul = 0.0
    for (shape, out, has_bias), count in sorted(shapes.items()):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
        weight = torch.randn(out, shape[1], 1, 1, requires_grad=True)
        bias = torch.randn(out, requires_grad=True) if has_bias else None
        grad = torch.randn(shape[0], out, *shape[2:]).contiguous(memory_format=torch.channels_last)
        conv = median_ms(lambda: F.conv2d(x, weight, bias).backward(grad))  # noqa: B023 (called at once)
        matmul = median_ms(lambda: F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(  # noqa: B023
            0, 3, 1, 2).backward(grad))  # noqa: B023  # fmt: skip
        total_conv, total_matmul = total_conv + count * conv, total_matmul + count * matmul
        print(f"{str(shape):<22} {out:>5} {count:>5} {conv:>8.2f} {matmul:>9.2f} {conv / matmul:>11.2f}")
    print(f"{'all, weighted by count':<34} {total_conv:>8.1f} {total_matmul:>9.1f} {total_conv / total_matmul:>11.2f}")

    largest = max(shapes, key=lambda s: torch.Size(s[0]).numel() // s[0][1] * s[1])  # the widest fc1 output
    x = torch.randn(largest[0][0], largest[1], *largest[0][2:]).contiguous(memory_format=torch.channels_last)
    print(f"\nelementwise on {tuple(x.shape)}:")
    for name, fn in (("GELU (exact, erf)", lambda: F.gelu(x)), ("GELU (tanh)", lambda: F.gelu(x, approximate="tanh")),
                     ("ReLU", lambda: F.relu(x)), ("multiply", lambda: x * x)):  # fmt: skip
        print(f"  {name:<18} {median_ms(fn):>7.2f} ms")


if __name__ == "__main__":
    main()
