"""Weight pruning as model transformations: which layers can be pruned, magnitude masks, and channel removal.

- Unstructured (`magnitude`: per layer; `global`: one threshold over all chosen layers) zeroes the smallest weights
  of the chosen convolution and dense layers, never biases, to exactly round(n x amount) zeros (torch.nn.utils.prune's
  L1Unstructured computes the masks). The weights stay plain tensors holding exact zeros (no weight_orig x weight_mask
  reparametrisation), so every checkpoint loads into the plain architecture; `engine.sparsity` keeps them zero while
  a pruned model trains.
- Structured removes whole channels with Torch-Pruning (dependency graph + group L2 magnitude), to a channel ratio or
  a MACs target, leaving the classifier's output layer alone. The narrowed widths go into the model spec
  (models/widths.py), so the result is rebuilt from JSON and loads a plain state dict.

A pruned run (runs/prune.py) applies these to its parent's weights; `cnnbench prune` (prune/) sweeps amounts and
measures the results.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.models import build, record_widths
from cnnbench.models.accounting import count_macs

LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
                                                       "linear": (nn.Linear,)}


PRUNABLE = LAYER_TYPES["conv"] + LAYER_TYPES["linear"]


# --target-macs: Torch-Pruning removes channels in steps of 1% of each layer's width until the model is under target
MAC_SEARCH_STEPS = 99


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolutions and dense layers by module name, in model order: the layers whose weights pruning touches."""
    return {name: module for name, module in model.named_modules() if isinstance(module, PRUNABLE)}


def select_layers(model: nn.Module, text: str, *, model_name: str) -> list[str]:
    """The layers `--layers` names: a comma list of types (conv, linear) and module-name globs ('head.*'); a glob also
    selects the layers inside a module it names ('head', 'backbone.layer4'). Every item must match a layer."""
    layers = prunable_layers(model)
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError("--layers is empty: give layer types (conv, linear) or module-name globs such as 'head.*'")
    chosen: set[str] = set()
    for item in items:
        if item in LAYER_TYPES:
            matched = {name for name, module in layers.items() if isinstance(module, LAYER_TYPES[item])}
        else:
            matched = {name for name in layers
                       if fnmatch.fnmatchcase(name, item) or fnmatch.fnmatchcase(name, item + ".*")}  # fmt: skip
        if not matched:
            names = list(layers)
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            kind = f"no {item} layer" if item in LAYER_TYPES else "no convolution or dense layer"
            raise UsageError(f"--layers {item!r} matches {kind} of {model_name}; its layers are: {shown} (or give the "
                             f"types conv, linear)")  # fmt: skip
        chosen |= matched
    return [name for name in layers if name in chosen]


def classifier_output_layer(model: nn.Module) -> str:
    """The layer that produces the class scores: the last convolution or dense layer of the model's `head` (zoo and
    transfer models both have one), else of the whole model. Pruning its outputs would remove classes."""
    layers = prunable_layers(model)
    in_head = [name for name in layers if name == "head" or name.startswith("head.")]
    return (in_head or list(layers))[-1]


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, *, method: str) -> dict[str, torch.Tensor]:
    """Keep-masks (bool) that zero exactly round(n x sparsity) of the smallest |w|: per tensor (`magnitude`), or over
    all of them together (`global`, what torch.nn.utils.prune.global_unstructured does). Weights already zero are the
    smallest, so a mask at a higher sparsity contains the one at a lower sparsity."""
    from torch.nn.utils import prune

    def masks_for(flat: torch.Tensor) -> torch.Tensor:
        count = round(sparsity * flat.numel())  # as torch.nn.utils.prune rounds a fractional amount
        return prune.L1Unstructured(amount=count).compute_mask(flat, torch.ones_like(flat)).bool()

    # contiguous: compute_mask flattens with view(-1), which a channels_last kernel refuses
    flat = {name: weight.detach().contiguous().view(-1) for name, weight in weights.items()}
    if method == "global":
        keep = masks_for(torch.cat(list(flat.values())))
        pieces = keep.split([t.numel() for t in flat.values()])
        return {name: piece.view(weights[name].shape) for name, piece in zip(flat, pieces)}
    return {name: masks_for(t).view(weights[name].shape) for name, t in flat.items()}


@torch.no_grad()
def sparsify(model: nn.Module, layers: list[str], sparsity: float, *, method: str) -> dict[str, torch.Tensor]:
    """Zero the smallest weights of `layers` in place (see magnitude_masks); returns the keep-masks."""
    weights = {name: model.get_submodule(name).weight for name in layers}
    masks = magnitude_masks(weights, sparsity, method=method)
    for name, weight in weights.items():
        weight.mul_(masks[name])
    return masks


@dataclass
class ChannelPruning:
    model: nn.Module  # rebuilt from `spec` with the pruned weights loaded: what the child run trains
    spec: Any  # ModelSpec with the narrowed widths
    channel_ratio: float  # measured: the share of the chosen layers' output channels removed (small layers round)
    output_layer: str  # the classifier's output layer, never pruned
    unchanged: list[str]  # chosen layers whose outputs Torch-Pruning left whole (coupled to a layer it may not prune)
    notes: list[str] = field(default_factory=list)


def prune_channels(model: nn.Module, model_spec: Any, layers: list[str], *, ratio: float | None = None,
                   target_macs: int | None = None) -> ChannelPruning:  # fmt: skip
    """Remove output channels of `layers` with Torch-Pruning (group L2 magnitude), to `ratio` of each layer's channels
    or until the model needs at most `target_macs` MACs per image, then rebuild the narrowed model from its spec."""
    import torch_pruning as tp


    spec_in = model_spec.input
    model.eval()  # a BatchNorm over a 1x1 map refuses a batch of one in training mode
    for parameter in model.parameters():
        parameter.requires_grad_(True)  # the dependency graph is traced through autograd: frozen layers must take part
    output_layer = classifier_output_layer(model)
    layers_before = {name: _outputs(module) for name, module in prunable_layers(model).items()}
    ignored = [module for name, module in prunable_layers(model).items() if name not in layers or name == output_layer]
    example = torch.zeros(1, spec_in.channels, spec_in.height, spec_in.width)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if ratio is not None:
                pruner = tp.pruner.BasePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                              pruning_ratio=ratio, ignored_layers=ignored)  # fmt: skip
                pruner.step()
            else:
                assert target_macs is not None
                pruner = tp.pruner.BasePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                              pruning_ratio=MAC_SEARCH_STEPS / 100, iterative_steps=MAC_SEARCH_STEPS,
                                              ignored_layers=ignored)  # fmt: skip
                steps = 0
                while count_macs(model, spec_in) > target_macs and steps < MAC_SEARCH_STEPS:
                    pruner.step()
                    steps += 1
                macs = count_macs(model, spec_in)
                if macs > target_macs:
                    raise UsageError(f"--target-macs {target_macs:,} is below what removing {MAC_SEARCH_STEPS}% of "
                                     f"the chosen layers' channels reaches ({macs:,} MACs per image); give a larger "
                                     f"target")  # fmt: skip
                ratio = steps / 100
        except UsageError:
            raise
        except Exception as error:  # Torch-Pruning's tracing fails in many ways on models it does not support
            raise UsageError(f"Torch-Pruning cannot prune {model_spec.name} ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:160] if str(error) else ''}); use --method magnitude or "
                             f"global") from None  # fmt: skip
    notes += [f"Torch-Pruning: {str(w.message).strip().splitlines()[0][:200]}" for w in caught
              if not issubclass(w.category, DeprecationWarning)]  # fmt: skip
    try:
        widths = record_widths(model, model_spec)
    except ValueError as error:  # a layer kind whose size a spec cannot record (LayerNorm, layer scale)
        raise UsageError(f"structured pruning of {model_spec.name} changes more than convolution, dense and BatchNorm "
                         f"widths ({error}); the run could not be rebuilt from its spec, so use --method magnitude or "
                         f"global") from None  # fmt: skip
    child_spec = model_spec.with_options(widths=widths)
    child = build(child_spec)
    child.load_state_dict(model.state_dict())  # strict: proves the run directory's spec rebuilds exactly this model
    after = {name: _outputs(module) for name, module in prunable_layers(child).items()}
    unchanged = [name for name in layers if name != output_layer and after.get(name) == layers_before[name]]
    chosen = [name for name in layers if name != output_layer]
    before_total = sum(layers_before[name] for name in chosen)
    removed = 1 - sum(after[name] for name in chosen) / before_total if before_total else 0.0
    return ChannelPruning(model=child, spec=child_spec, channel_ratio=round(removed, 4), output_layer=output_layer,
                          unchanged=unchanged, notes=notes)  # fmt: skip


def _outputs(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels

