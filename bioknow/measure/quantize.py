"""Post-training weight quantization to int8 / int4, simulated ("fake quantization").

Every weight matrix is rounded to a symmetric grid with one scale per output channel,
scale = max |w_row| / (2^(bits-1) - 1), and replaced in place by its dequantized values
q x scale (q an integer in [-2^(bits-1), 2^(bits-1) - 1]), so the same float model is run
and evaluated. Two methods: round-to-nearest (RTN), and GPTQ (Frantar et al. 2022, "GPTQ:
Accurate Post-Training Quantization for Generative Pre-trained Transformers"), which
rounds a layer's input columns one at a time and spreads each rounding error over the
columns not yet rounded, weighted by the inverse Hessian of the layer's squared output
error on calibration inputs.
"""

import torch
from torch import Tensor, nn

from bioknow.base.errors import InputError
from bioknow.training.model import ExpertLinear, Transformer

BITS = {"int8": 8, "int4": 4}
METHODS = ("gptq", "rtn")


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _row_scales(weight: Tensor, bits: int) -> Tensor:
    """One scale per row (over the last dimension), keeping that dimension."""
    return weight.abs().amax(dim=-1, keepdim=True) / _qmax(bits)


def _round_to_grid(w: Tensor, scale: Tensor, bits: int) -> Tensor:
    """w rounded to the nearest multiple of scale in the signed bits-bit range; 0 where
    the scale is 0 (a row of zeros)."""
    qmax = _qmax(bits)
    q = (w / torch.where(scale > 0, scale, 1.0)).round().clamp(-qmax - 1, qmax)
    return q * scale


@torch.no_grad()
def quantize_rtn_(weight: Tensor, bits: int) -> Tensor:
    """Round-to-nearest, one scale per row (per output channel of an nn.Linear weight
    [out, in]; leading dimensions, if any, are batches of rows). In place; returns weight.

    Computed in float64, so a row's largest |w| is kept exactly."""
    w = weight.double()
    return weight.copy_(_round_to_grid(w, _row_scales(w, bits), bits))


@torch.no_grad()
def gptq_(
    weight: Tensor, hessian: Tensor, bits: int, damp: float = 0.01, block: int = 128
) -> Tensor:
    """GPTQ of an nn.Linear weight [out, in] in place (returns weight), given the Hessian
    H = 2 X^T X / n [in, in] of its inputs X [n, in].

    The scales are those of RTN, fixed from the original weight's rows. Columns whose
    input is always 0 (H_ii = 0) are zeroed; H is dampened by damp x mean(diag H). With U
    the upper Cholesky factor of H^-1, column i is rounded to q and the error
    (w_i - q) / U_ii, times row i of U, is subtracted from the later columns: at once
    within a block of `block` columns, for later blocks once per block (lazy batch
    updates). Computed in float64."""
    w = weight.detach().to(torch.float64, copy=True)
    h = hessian.detach().to(torch.float64, copy=True)
    scale = _row_scales(w, bits)[:, 0]
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * h.diagonal().mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    columns = w.size(1)
    for start in range(0, columns, block):
        end = min(start + block, columns)
        errors = torch.empty_like(w[:, start:end])
        for i in range(start, end):
            q = _round_to_grid(w[:, i], scale, bits)
            error = (w[:, i] - q) / u[i, i]
            w[:, i + 1 : end] -= error[:, None] * u[i, i + 1 : end]
            w[:, i] = q
            errors[:, i - start] = error
        w[:, end:] -= errors @ u[start:end, end:]
    return weight.copy_(w)


class _Stop(Exception):
    """Raised by a hook to end a calibration forward pass once the wanted inputs are seen."""


@torch.no_grad()
def _hessians(
    model: nn.Module, layers: list[nn.Linear], stop: nn.Module, calibration: list[Tensor]
) -> dict[nn.Linear, Tensor]:
    """H = 2 X^T X / n (float64) of the inputs X of each linear layer over all calibration
    tokens; each forward pass ends as soon as the module `stop` has run."""
    sums = {
        layer: torch.zeros(
            layer.in_features, layer.in_features, dtype=torch.float64, device=layer.weight.device
        )
        for layer in layers
    }
    counts = dict.fromkeys(layers, 0)

    def accumulate(layer: nn.Linear, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().reshape(-1, layer.in_features).float()
        sums[layer] += (x.T @ x).double()
        counts[layer] += x.size(0)

    def halt(module: nn.Module, inputs, output) -> None:
        raise _Stop

    hooks = [layer.register_forward_pre_hook(accumulate) for layer in layers]
    hooks.append(stop.register_forward_hook(halt))
    device = next(model.parameters()).device
    try:
        for batch in calibration:
            try:
                model(batch.to(device))
            except _Stop:
                pass
    finally:
        for hook in hooks:
            hook.remove()
    return {layer: 2 * sums[layer] / counts[layer] for layer in layers}


def quantize_(
    model: Transformer, level: str, method: str = "gptq", calibration: list[Tensor] | None = None
) -> dict:
    """Quantize every weight matrix of the model in place to `level` ("int8" or "int4").

    Each nn.Linear weight of the blocks, and an untied lm_head, is quantized with `method`
    ("gptq" or "rtn"); biases and norms stay float. The token embedding (and with it a tied
    lm_head) and the MoE expert weights (ExpertLinear, [n_expert, in, out]: one scale per
    expert and output channel) are always rounded to nearest (RTN): a lookup has no
    Hessian, and the experts' inputs are not collected for one.

    GPTQ needs `calibration`, a list of token batches [b, L]. As in the paper, the blocks
    are done in order: the Hessians of block i's linear layers come from forward passes
    of the model whose embedding and blocks before i are already quantized, then the
    block is quantized; an untied lm_head comes last.

    Returns {"level", "method", "layers": weight tensors quantized, "weights": their
    element count}; a tied embedding and lm_head count once."""
    if level not in BITS:
        raise InputError(f"unknown quantization level {level!r}; choose {', '.join(BITS)}")
    if method not in METHODS:
        raise InputError(f"unknown quantization method {method!r}; choose {', '.join(METHODS)}")
    if method == "gptq" and not calibration:
        raise InputError("GPTQ quantization needs calibration token batches")
    bits = BITS[level]
    # (module whose output ends a calibration pass, the linear layers quantized after it)
    stages = [(b, [m for m in b.modules() if isinstance(m, nn.Linear)]) for b in model.blocks]
    if model.lm_head.weight is not model.wte.weight:
        stages.append((model.lm_head, [model.lm_head]))
    was_training = model.training
    model.eval()
    try:
        quantize_rtn_(model.wte.weight, bits)
        done = [model.wte.weight]
        for stop, layers in stages:
            if method == "gptq":
                hessians = _hessians(model, layers, stop, calibration)
                for layer in layers:
                    gptq_(layer.weight, hessians[layer], bits)
            else:
                for layer in layers:
                    quantize_rtn_(layer.weight, bits)
            experts = [m for m in stop.modules() if isinstance(m, ExpertLinear)]
            for expert in experts:
                quantize_rtn_(expert.weight.transpose(1, 2), bits)  # rows: output channels
            done += [m.weight for m in layers + experts]
    finally:
        model.train(was_training)
    return {
        "level": level,
        "method": method,
        "layers": len(done),
        "weights": sum(w.numel() for w in done),
    }
