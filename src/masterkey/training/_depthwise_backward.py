"""The input gradient of frozen depthwise convs, computed as a transposed convolution.

On CPU, torch's own backward of a depthwise conv (oneDNN) is many times slower than its forward for large kernels:
in ``convnext_atto`` at 64 px the backward of its 7x7 depthwise convs took about a third of a training step. A
frozen kernel needs only the input's gradient, and that is the adjoint of the convolution: a transposed
convolution with the same kernel (for stride 1, the convolution with the kernel flipped), which runs about as fast
as the forward. Same gradients to float rounding; ``tests/test_training_speed.py`` checks them, and
``benchmarks/train_loop.py`` measures the step. Smaller kernels (3x3, 5x5: EfficientNet, MobileNet) gained nothing
measurable, so only kernels of :data:`MIN_KERNEL_SIZE` and up take this path.

The model is never changed: a :class:`~torch.overrides.TorchFunctionMode`, active around the training forward,
reroutes the ``conv2d`` calls whose weight is a frozen depthwise kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..extract import is_depthwise

__all__ = ["MIN_KERNEL_SIZE", "has_large_frozen_depthwise", "transposed_depthwise_backward"]

#: The smallest kernel side that takes the transposed backward (measured: 7x7 1.2x per ConvNeXt step on CPU; 3x3
#: and 5x5 models 0.97-1.01x, within noise or below).
MIN_KERNEL_SIZE = 7

_CONV_ARGS = ("bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = (None, 1, 0, 1, 1)


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


class _FrozenDepthwiseConv(torch.autograd.Function):
    """``F.conv2d`` with a frozen depthwise ``weight``: the input's gradient by transposed convolution, the bias's
    as the sum of the output gradient; no gradient for the weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.setup = (tuple(x.shape[-2:]), x.dtype, stride, padding, dilation, groups)
        ctx.bias_grad = bias is not None and bias.requires_grad
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        size, dtype, stride, padding, dilation, groups = ctx.setup
        weight = weight.to(grad.dtype)  # under autocast the output gradient is in the autocast dtype
        grad_input = None
        if ctx.needs_input_grad[0]:
            kernel = weight.shape[-2:]
            if stride == (1, 1) and weight.shape[0] == groups:  # the adjoint is the conv with the flipped kernel
                pad = tuple(dilation[i] * (kernel[i] - 1) - padding[i] for i in range(2))
                grad_input = F.conv2d(grad, weight.flip(-1, -2), None, 1, pad, dilation, groups)
            else:  # strided, or several outputs per channel: the transposed conv, padded back to the input's size
                extra = tuple(size[i] - ((grad.shape[-2 + i] - 1) * stride[i] - 2 * padding[i]
                                         + dilation[i] * (kernel[i] - 1) + 1) for i in range(2))  # fmt: skip
                grad_input = F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups, dilation)
            grad_input = grad_input.to(dtype)
        grad_bias = grad.sum((0, 2, 3)) if ctx.bias_grad else None
        return grad_input, None, grad_bias, None, None, None, None


def _is_depthwise_kernel(weight: torch.Tensor, groups: int) -> bool:
    return weight.dim() == 4 and groups > 1 and weight.shape[1] == 1 and weight.shape[0] % groups == 0


class _TransposedDepthwiseMode(TorchFunctionMode):
    """Reroutes ``conv2d`` calls with a frozen depthwise kernel of :data:`MIN_KERNEL_SIZE` or more, an input that
    needs its gradient and numeric padding; every other call goes through unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and len(args) >= 2 and torch.is_grad_enabled():
            x, weight = args[0], args[1]
            rest = [args[2 + i] if 2 + i < len(args) else kwargs.get(name, default)
                    for i, (name, default) in enumerate(zip(_CONV_ARGS, _CONV_DEFAULTS))]  # fmt: skip
            bias, stride, padding, dilation, groups = rest
            if (isinstance(weight, torch.Tensor) and not weight.requires_grad and x.requires_grad
                    and not isinstance(padding, str) and _is_depthwise_kernel(weight, groups)
                    and max(weight.shape[-2:]) >= MIN_KERNEL_SIZE):  # fmt: skip
                return _FrozenDepthwiseConv.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation),
                                                  groups)  # fmt: skip
        return func(*args, **kwargs)


def has_large_frozen_depthwise(model: torch.nn.Module) -> bool:
    """Whether ``model`` has a frozen depthwise conv with a kernel of :data:`MIN_KERNEL_SIZE` or more, the convs
    :func:`transposed_depthwise_backward` speeds up.

    Example:
        >>> model = timm.create_model("convnext_atto")
        >>> freeze_depthwise(model)  # e.g. by from_pretrained_filters
        >>> has_large_frozen_depthwise(model)
        True
    """
    return any(is_depthwise(module) and not module.weight.requires_grad and max(module.kernel_size) >= MIN_KERNEL_SIZE
               for module in model.modules())  # fmt: skip


@contextlib.contextmanager
def transposed_depthwise_backward(enabled: bool = True) -> Iterator[None]:
    """Within this context, the frozen depthwise convs of :data:`MIN_KERNEL_SIZE` and up compute their input's
    gradient by transposed convolution (the same gradients, faster on CPU); a no-op when not ``enabled``. Wrap the
    forward pass; the backward may run outside it.

    Example:
        >>> with transposed_depthwise_backward():
        ...     loss = F.cross_entropy(model(images), labels)
        >>> loss.backward()
    """
    if not enabled:
        yield
        return
    with _TransposedDepthwiseMode():
        yield
