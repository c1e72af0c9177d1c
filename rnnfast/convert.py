"""Swap torch.nn's recurrent modules for rnnfast's throughout a model, and back.

A swapped module is a new module object built with the same constructor arguments that takes over the
old one's Parameter objects themselves, so optimizers and anything else holding them keep working.
"""

import warnings
from collections.abc import Callable

import torch
from torch import nn

from . import modules

TO_RNNFAST: dict[type[nn.Module], type[nn.Module]] = {
    nn.LSTM: modules.LSTM,
    nn.GRU: modules.GRU,
    nn.RNN: modules.RNN,
    nn.LSTMCell: modules.LSTMCell,
    nn.GRUCell: modules.GRUCell,
    nn.RNNCell: modules.RNNCell,
}
TO_TORCH: dict[type[nn.Module], type[nn.Module]] = {fast: base for base, fast in TO_RNNFAST.items()}


def convert(model: nn.Module, *, backend: str | None = "auto") -> nn.Module:
    """Replace every torch.nn LSTM, GRU, RNN, LSTMCell, GRUCell and RNNCell in `model` by its rnnfast twin.

    Only modules whose type is exactly one of those six are swapped; the rnnfast module takes over the very
    same Parameter objects (values, dtype, device, requires_grad and identity), the training/eval mode and the
    hooks registered on the module. Modules that are rnnfast's already are left alone. Subclasses of the
    torch.nn classes (their forward may do something else) are left as they are and named in a UserWarning.

    Args:
        model: any nn.Module, changed in place. It may itself be one of the six modules, in which case the
            returned module is a new object: always use the return value.
        backend: given to every rnnfast module: "auto", "triton", "scan" (rnnfast's PyTorch scan), or None
            to read RNNFAST_BACKEND.

    Returns:
        `model`, or its rnnfast replacement when `model` itself was swapped.

    Example:
        >>> model = nn.Sequential(nn.Embedding(100, 32), nn.LSTM(32, 64, batch_first=True))
        >>> optimizer = torch.optim.Adam(model.parameters())  # keeps working after convert
        >>> model = rnnfast.convert(model)
        >>> type(model[1])
        <class 'rnnfast.modules.LSTM'>
    """
    return _swap_all(model, TO_RNNFAST, {"backend": backend}, "rnnfast.convert", already_swapped=tuple(TO_TORCH))


def revert(model: nn.Module) -> nn.Module:
    """Replace every rnnfast module in `model` by the plain torch.nn module it extends (rnnfast.LSTM by
    torch.nn.LSTM, ...), for tools that only know torch.nn, such as the ONNX exporter.

    The torch.nn module takes over the very same Parameter objects, the training/eval mode and the hooks.
    Subclasses of rnnfast's classes are left as they are and named in a UserWarning.

    Args:
        model: any nn.Module, changed in place; if it is itself an rnnfast module, use the return value.

    Returns:
        `model`, or its torch.nn replacement when `model` itself was swapped.

    Example:
        >>> model = rnnfast.convert(nn.Sequential(nn.Embedding(100, 32), nn.GRU(32, 64)))
        >>> model = rnnfast.revert(model)  # torch.nn modules again, same Parameter objects
        >>> type(model[1])
        <class 'torch.nn.modules.rnn.GRU'>
    """
    return _swap_all(model, TO_TORCH, {}, "rnnfast.revert", already_swapped=())


def _swap_all(
    model: nn.Module, mapping: dict, extra_kwargs: dict, caller: str, already_swapped: tuple[type, ...]
) -> nn.Module:
    """Swaps every module whose type is a key of `mapping`; warns about the other instances of those keys
    except those of `already_swapped` (convert leaves rnnfast's modules, which subclass torch.nn's, alone)."""
    subclassed = []
    swapped = {}  # id(old module) -> its replacement, so a module shared by two parents is swapped once

    def swap(module: nn.Module, path: str) -> nn.Module:
        if id(module) in swapped:
            return swapped[id(module)]
        target = mapping.get(type(module))
        if target is not None:
            replacement = _rebuild(module, target, extra_kwargs)
        else:
            if isinstance(module, tuple(mapping)) and not isinstance(module, already_swapped):
                subclassed.append(f"{path or '<root>'} ({type(module).__module__}.{type(module).__qualname__})")
            replacement = module
        swapped[id(module)] = replacement
        if replacement is module:
            # _modules rather than named_children(), which skips the second name of a child held twice.
            for name, child in list(module._modules.items()):
                if child is None:
                    continue
                new_child = swap(child, f"{path}.{name}" if path else name)
                if new_child is not child:
                    setattr(module, name, new_child)
        return replacement

    result = swap(model, "")
    if subclassed:
        warnings.warn(
            f"{caller} left these subclasses of recurrent modules as they are, since their forward may differ "
            f"from the base class's: {', '.join(subclassed)}",
            UserWarning,
            stacklevel=3,
        )
    return result


def _constructor_kwargs(module: nn.Module) -> dict:
    """The keyword arguments that rebuild `module`'s structure (sizes and flags, not values)."""
    kwargs = {"input_size": module.input_size, "hidden_size": module.hidden_size, "bias": module.bias}
    if isinstance(module, nn.RNNBase):
        kwargs.update(
            num_layers=module.num_layers,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
        )
        if module.mode == "LSTM":
            kwargs["proj_size"] = module.proj_size
    if hasattr(module, "nonlinearity"):  # torch.nn.RNN, RNNCell and their rnnfast twins
        kwargs["nonlinearity"] = module.nonlinearity
    return kwargs


def _rebuild(module: nn.Module, target: Callable[..., nn.Module], extra_kwargs: dict) -> nn.Module:
    """A `target` module with `module`'s structure that holds `module`'s own parameters, buffers and hooks."""
    with warnings.catch_warnings():
        # The original module already warned about dropout with a single layer when it was built.
        warnings.filterwarnings("ignore", message="dropout option adds dropout", category=UserWarning)
        replacement = target(**_constructor_kwargs(module), **extra_kwargs, device="meta")
    # Exactly the original's parameters and buffers, in its order: a pruned or torch.nn.utils.weight_norm'ed
    # module has swapped a weight for other parameters and recomputes the weight itself as a plain attribute.
    replacement._parameters = module._parameters.copy()
    replacement._buffers = module._buffers.copy()
    replacement._non_persistent_buffers_set = module._non_persistent_buffers_set.copy()
    # The hook dicts themselves move over, so the handles returned when they were registered still remove them.
    for key, value in vars(module).items():
        if isinstance(value, torch.Tensor) or "_hook" in key:
            replacement.__dict__[key] = value
    if isinstance(replacement, nn.RNNBase):
        replacement._init_flat_weights()
    replacement.train(module.training)
    return replacement
