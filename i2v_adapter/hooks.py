"""Named, removable forward hooks that add the first-frame branch to every spatial attn1."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .weights.adapter import AdapterWeights, LayerWeights
from .attention import first_frame_attention
from .layout import FIRST, LAST, FrameLayout
from .weights.naming import UnknownLayerName, canonical_layer_name, is_temporal_path

HOOK_TAG = "_i2v_adapter_branch"


def _is_attention(module: nn.Module) -> bool:
    return all(hasattr(module, attr) for attr in ("to_q", "to_k", "to_v", "to_out", "heads"))


def find_attn1_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """Spatial self-attention modules by canonical (ldm) name; temporal attention and attn2 are left out."""
    layers = {}
    for path, module in unet.named_modules():
        if not path.endswith("attn1") or is_temporal_path(path) or not _is_attention(module):
            continue
        try:
            name = canonical_layer_name(path)
        except UnknownLayerName:
            name = path
        layers[name] = module
    return layers


def layer_channels(layers: dict[str, nn.Module]) -> dict[str, int]:
    return {name: module.to_q.in_features for name, module in layers.items()}


class BranchSettings:
    """Values every branch of one hook set reads at call time (so a change needs no reinstall)."""

    def __init__(self, scale: float):
        self.scale = scale


class FirstFrameBranch:
    """``out + s * to_out_ff(SDPA(to_q_ff(x), to_k(x0), to_v(x0)))`` for one attn1 layer.

    Without trained weights (training-free mode): ``(1 - s) * out + s * to_out(SDPA(to_q(x), to_k(x0), to_v(x0)))``.
    """

    def __init__(self, name: str, attention: nn.Module, layout: FrameLayout,
                 weights: LayerWeights | None, settings: BranchSettings):
        self.name = name
        self.attention = attention
        self.layout = layout
        self.weights = weights
        self.settings = settings
        self._cast: LayerWeights | None = None

    def _weights_like(self, x: torch.Tensor) -> LayerWeights:
        cast = self._cast
        if cast is None or cast.q_weight.dtype != x.dtype or cast.q_weight.device != x.device:
            cast = self._cast = self.weights.to(x.device, x.dtype)
        return cast

    def _first_frame_keys_values(self, x: torch.Tensor, n_chunks: int):
        """The keyframes' keys and values side by side (frame 0's tokens, then the last keyframe's), or None."""
        call = self.layout.next_call(self.name)
        parts = [part for keyframe in self.layout.keyframes
                 if (part := self._keyframe_keys_values(x, n_chunks, call, keyframe)) is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return torch.cat([keys for keys, _ in parts], dim=1), torch.cat([values for _, values in parts], dim=1)

    def _keyframe_keys_values(self, x: torch.Tensor, n_chunks: int, call: int, keyframe: str):
        stats, bank = self.layout.stats, self.layout.bank
        label = "" if keyframe == FIRST else "last "
        position = self.layout.window.position(keyframe)
        if position is None:
            entry = bank.fetch(self.name, call, n_chunks, keyframe)
            if entry is not None:
                stats[f"{label}banked"] += 1
                return entry
            entry = bank.fetch_previous(self.name, call, n_chunks, keyframe) if keyframe == LAST else None
            stats[f"{label}from the previous step" if entry is not None else
                  ("last missing" if keyframe == LAST else "unreferenced")] += 1
            return entry
        xk = x[position :: self.layout.window.chunk_length]
        keys, values = self.attention.to_k(xk), self.attention.to_v(xk)
        if self.layout.keep_reference:
            bank.store(self.name, call, keys, values, keyframe)
        stats[f"{label}anchored"] += 1
        return keys, values

    def reference_for(self, x: torch.Tensor):
        """Frame 0's keys and values for this attn1 call, or None where the branch does not apply."""
        if self.settings.scale == 0 or self.layout.skips_this_call():  # scale 0: the base model, no projections
            return None
        n_chunks = self.layout.chunk_count(x.shape[0])
        if n_chunks is None or x.dim() != 3:
            self.layout.stats["untouched"] += 1
            return None
        return self._first_frame_keys_values(x, n_chunks)

    def _attend(self, query: torch.Tensor, reference) -> torch.Tensor:
        keys, values = reference
        return first_frame_attention(query, keys, values, self.attention.heads, getattr(self.attention, "scale", None))

    def __call__(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """attn1's result with the branch added, from attn1's input and result alone."""
        reference = self.reference_for(x)
        return output if reference is None else self.add_to(x, output, reference)

    def add_to(self, x: torch.Tensor, output: torch.Tensor, reference) -> torch.Tensor:
        scale = self.settings.scale
        if self.weights is None:
            projected = self.attention.to_out[0](self._attend(self.attention.to_q(x), reference))
            return projected if scale == 1 else torch.lerp(output, projected, scale)
        weights = self._weights_like(x)
        projected = F.linear(self._attend(F.linear(x, weights.q_weight), reference), weights.out_weight,
                             weights.out_bias)
        # In place on our own temporary: no second output-sized tensor (autograd-safe: linear keeps its input).
        return (projected if scale == 1 else projected.mul_(scale)).add_(output)

    def blend_before_out(self, query: torch.Tensor, attended: torch.Tensor, reference) -> torch.Tensor:
        """Training-free mode inside attn1: ``(1 - s) * a + s * b`` before ``to_out``.

        ``to_out`` is affine, so this equals ``(1 - s) * to_out(a) + s * to_out(b)`` with one ``to_out`` and
        attn1's own query instead of a second ``to_q``.
        """
        branch = self._attend(query, reference)
        scale = self.settings.scale
        return branch if scale == 1 else torch.lerp(attended, branch, scale)


def _hook_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if args:
        return args[0]
    return kwargs.get("x", kwargs.get("hidden_states"))


def _is_self_attention_call(x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
    """No context, or a context that starts with x itself.

    Extensions that extend self-attention pass ``context=x`` or ``cat([x, extra tokens])``
    (ControlNet's reference-only does both); the branch still belongs there. Any other
    context makes the call cross-attention: leave it alone.
    """
    context = args[1] if len(args) > 1 else kwargs.get("context", kwargs.get("encoder_hidden_states"))
    if context is None or context is x:
        return True
    if not torch.is_tensor(context) or context.dim() != 3 or x.dim() != 3:
        return False
    rows, tokens, channels = x.shape
    if context.shape[0] != rows or context.shape[2] != channels or context.shape[1] < tokens:
        return False
    return torch.equal(context[:, :tokens], x)


def _make_hook(branch: FirstFrameBranch):
    def hook(module, args, kwargs, output):
        x = _hook_input(args, kwargs)
        if x is None or not torch.is_tensor(output) or not _is_self_attention_call(x, args, kwargs):
            return output
        return branch(x, output)

    return _tagged(hook, branch)


def _tagged(function, branch: FirstFrameBranch):
    """A hook function carrying our tag, so a sweep finds it even without the object that installed it."""
    def hook(*args, **kwargs):
        return function(*args, **kwargs)

    setattr(hook, HOOK_TAG, branch.name)
    return hook


class _TrainingFreeCall:
    """Training-free mode through attn1's own steps: its query (hook on ``to_q``) and its attention result
    just before ``to_out[0]`` (pre-hook), so nothing attn1 computes is computed twice.

    Where a host's attn1 does not call those submodules, the branch is added after attn1 as before.
    """

    def __init__(self, branch: FirstFrameBranch):
        self.branch = branch
        self._clear()

    def _clear(self):
        self.x = self.reference = self.query = None

    def before_attn1(self, module, args, kwargs):
        self._clear()
        x = _hook_input(args, kwargs)
        if x is not None and torch.is_tensor(x) and _is_self_attention_call(x, args, kwargs):
            self.reference = self.branch.reference_for(x)
            self.x = x if self.reference is not None else None

    def after_to_q(self, module, args, output):
        if self.reference is not None and self.query is None:
            self.query = output

    def before_to_out(self, module, args):
        if self.reference is None or self.query is None or not args:
            return None
        blended = self.branch.blend_before_out(self.query, args[0], self.reference)
        self._clear()
        return (blended, *args[1:])

    def after_attn1(self, module, args, kwargs, output):
        if self.reference is not None and torch.is_tensor(output):  # to_q/to_out were not called as modules
            output = self.branch.add_to(self.x, output, self.reference)
        self._clear()
        return output

    def register(self, attention: nn.Module) -> list:
        return [
            attention.register_forward_pre_hook(_tagged(self.before_attn1, self.branch), with_kwargs=True),
            attention.to_q.register_forward_hook(_tagged(self.after_to_q, self.branch)),
            attention.to_out[0].register_forward_pre_hook(_tagged(self.before_to_out, self.branch)),
            attention.register_forward_hook(_tagged(self.after_attn1, self.branch), with_kwargs=True),
        ]


# Every hook set that is installed, so that a sweep can remove them all whatever happened.
_installed: list["FirstFrameHooks"] = []


class FirstFrameHooks:
    """The hooks of one generation; use as a context manager or call install()/remove()."""

    def __init__(self, unet: nn.Module, layout: FrameLayout, weights: AdapterWeights | None = None, scale: float = 1.0):
        self.layers = find_attn1_layers(unet)
        if weights is not None:
            weights.check_against(layer_channels(self.layers))
        self.layout = layout
        self.weights = weights
        self.settings = BranchSettings(scale)
        self._handles = []

    @property
    def scale(self) -> float:
        return self.settings.scale

    @scale.setter
    def scale(self, value: float) -> None:
        self.settings.scale = value

    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def branches(self, layer_weights=None) -> dict[str, FirstFrameBranch]:
        """One branch per attn1 layer; ``layer_weights(name)`` overrides where a layer's weights come from."""
        if layer_weights is None:
            layer_weights = self.weights.layers.get if self.weights is not None else (lambda name: None)
        return {name: FirstFrameBranch(name, module, self.layout, layer_weights(name), self.settings)
                for name, module in self.layers.items()}

    def install(self) -> "FirstFrameHooks":
        if self._handles:
            return self
        for name, branch in self.branches().items():
            module = self.layers[name]
            if self.weights is None:
                self._handles.extend(_TrainingFreeCall(branch).register(module))
            else:
                self._handles.append(module.register_forward_hook(_make_hook(branch), with_kwargs=True))
        _installed.append(self)
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self in _installed:
            _installed.remove(self)

    def __enter__(self) -> "FirstFrameHooks":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()


_HOOK_DICTS = (("_forward_hooks", "_forward_hooks_with_kwargs"), ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"))


def remove_all_hooks(*modules: nn.Module) -> int:
    """Remove every hook set still installed, and any tagged hook left on ``modules`` (e.g. after a reload).

    Returns the number of hooks removed from ``modules`` by the tag scan.
    """
    for hooks in list(_installed):
        hooks.remove()
    removed = 0
    for root in modules:
        for module in root.modules():
            for hooks_name, kwargs_name in _HOOK_DICTS:
                hooks = getattr(module, hooks_name)
                for key, hook in list(hooks.items()):
                    if hasattr(hook, HOOK_TAG):
                        del hooks[key]
                        getattr(module, kwargs_name, {}).pop(key, None)
                        getattr(module, "_forward_hooks_always_called", {}).pop(key, None)
                        removed += 1
    return removed


def installed_hook_count(root: nn.Module) -> int:
    return sum(hasattr(hook, HOOK_TAG) for module in root.modules() for hooks_name, _ in _HOOK_DICTS
               for hook in getattr(module, hooks_name).values())
