import copy

import pytest
import torch
from torch import nn

from bioknow.base.errors import InputError
from bioknow.measure import quantize
from bioknow.training.model import ModelConfig, Transformer

VOCAB = 256
# Weight tensors quantized: the embedding, the blocks' linear and expert layers, an untied lm_head.
LAYERS = {"gpt2-2-2": 1 + 2 * 4, "llama-2-2": 1 + 2 * 5 + 1, "gpt2-moe-1-2": 1 + 3 + 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def rows(weight: torch.Tensor) -> torch.Tensor:
    """The weight as rows, one per output channel: experts [n, in, out] -> [n, out, in]."""
    return weight.transpose(1, 2) if weight.dim() == 3 else weight


def assert_on_grid(new: torch.Tensor, old: torch.Tensor, bits: int) -> None:
    """Each row of `new` is an integer multiple, in the signed bits-bit range, of the scale
    max |row| / qmax of the same row of the original weight `old`."""
    new, old = rows(new).double(), rows(old).double()
    scale = old.abs().amax(-1, keepdim=True) / qmax(bits)
    q = new / torch.where(scale > 0, scale, 1.0)
    assert torch.allclose(q, q.round(), atol=1e-4)
    assert q.min() >= -qmax(bits) - 1 - 1e-4 and q.max() <= qmax(bits) + 1e-4
    assert torch.all(new[(scale == 0).expand_as(new)] == 0)


def correlated_layer(seed: int = 0, out: int = 32, d: int = 64, n: int = 1024):
    """A random weight [out, d] and inputs X = Z A [n, d], A a rank-8 mixing plus a little
    identity, so that X^T X is far from diagonal."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, 8, generator=g) @ torch.randn(8, d, generator=g) + 0.3 * torch.eye(d)
    x = torch.randn(n, d, generator=g) @ mixing
    return torch.randn(out, d, generator=g), x


def hessian(x: torch.Tensor) -> torch.Tensor:
    return 2 * x.T @ x / x.size(0)


def build(name: str, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.from_name(name, VOCAB))


def calibration(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (4, 32), generator=g) for _ in range(4)]


def weight_names(model: nn.Module) -> list[str]:
    """The weight matrices (tied ones once) of the model; expert biases [n, out] are not."""
    return [n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2]


# Round to nearest


@pytest.mark.parametrize("bits", [8, 4])
def test_rtn_rows_on_their_grid(bits):
    torch.manual_seed(0)
    weight = torch.randn(12, 300) * torch.logspace(-3, 1, 12)[:, None]
    weight[3] = 0.0
    weight[5, 7] = 50.0  # an outlier coarsens its row only
    original = weight.clone()
    assert quantize.quantize_rtn_(weight, bits) is weight
    assert not torch.equal(weight, original)
    assert_on_grid(weight, original, bits)
    scale = original.abs().amax(1, keepdim=True) / qmax(bits)
    assert torch.all((weight - original).abs() <= scale / 2 * (1 + 1e-6))
    assert torch.equal(weight.abs().amax(1), original.abs().amax(1))  # the row max, exactly
    assert torch.all(weight[3] == 0)
    for row in weight:
        assert len(row.unique()) <= 2 * qmax(bits) + 1  # int8: 255, int4: 15
    assert len(weight[0].unique()) > qmax(bits) // 2  # the grid is used


def test_rtn_on_a_parameter_and_idempotent():
    layer = nn.Linear(40, 20)
    quantize.quantize_rtn_(layer.weight, 4)
    once = layer.weight.detach().clone()
    quantize.quantize_rtn_(layer.weight, 4)
    assert torch.equal(layer.weight, once)


# GPTQ


def test_gptq_beats_rtn_on_correlated_inputs():
    weight, x = correlated_layer()
    rtn = quantize.quantize_rtn_(weight.clone(), 4)
    gptq = weight.clone()
    assert quantize.gptq_(gptq, hessian(x), 4) is gptq
    assert_on_grid(gptq, weight, 4)
    assert len(gptq.unique()) > 1
    rtn_error = (x @ (weight - rtn).T).norm()
    gptq_error = (x @ (weight - gptq).T).norm()
    assert gptq_error < 0.5 * rtn_error


def test_gptq_with_a_diagonal_hessian_is_rtn():
    """Without correlations between inputs there is no error to pass on to other columns."""
    weight, _ = correlated_layer()
    h = torch.diag(torch.rand(weight.size(1), generator=torch.Generator().manual_seed(2)) + 0.1)
    gptq = quantize.gptq_(weight.clone(), h, 4)
    assert torch.equal(gptq, quantize.quantize_rtn_(weight.clone(), 4))


def test_gptq_lazy_blocks_change_nothing():
    weight, x = correlated_layer()
    whole = quantize.gptq_(weight.clone(), hessian(x), 4, block=128)
    blocked = quantize.gptq_(weight.clone(), hessian(x), 4, block=7)
    assert not torch.equal(whole, quantize.quantize_rtn_(weight.clone(), 4))
    assert torch.allclose(whole, blocked, atol=1e-6)


def test_gptq_zeroes_dead_columns():
    weight, x = correlated_layer()
    x[:, [0, 9]] = 0.0  # inputs that are never active
    h = hessian(x)
    gptq = quantize.gptq_(weight.clone(), h, 8)
    assert torch.all(gptq[:, [0, 9]] == 0)
    assert torch.isfinite(gptq).all()
    assert_on_grid(gptq, weight, 8)
    assert torch.equal(h, hessian(x))  # the Hessian given is left as it was


# Whole models


@pytest.mark.parametrize("method", quantize.METHODS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_quantize_model(name, method):
    model = build(name)
    model.train()
    idx = calibration(seed=9)[0]
    with torch.no_grad():
        logits = model.eval()(idx)[0]
    model.train()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    deltas = {}
    for level, bits in quantize.BITS.items():
        quantized = copy.deepcopy(model)
        summary = quantize.quantize_(quantized, level, method, calibration())
        weights = weight_names(quantized)
        assert summary == {
            "level": level,
            "method": method,
            "layers": LAYERS[name],
            "weights": sum(original[n].numel() for n in weights),
        }
        assert quantized.training
        params = dict(quantized.named_parameters())
        for n in weights:
            assert not torch.equal(params[n], original[n]), n
            assert_on_grid(params[n], original[n], bits)
        for n in params.keys() - set(weights):  # biases and norms
            assert torch.equal(params[n], original[n]), n
        with torch.no_grad():
            new_logits = quantized.eval()(idx)[0]
        assert torch.isfinite(new_logits).all()
        deltas[level] = (new_logits - logits).abs()
    # int8's grid is 127 / 7 ~ 18 times finer than int4's. The largest change is a looser
    # measure under MoE: a token whose (random, near-uniform) router flips to another
    # expert moves about as much at int8 as at int4.
    assert 0 < deltas["int8"].mean() < 0.1 * deltas["int4"].mean()
    assert 0 < deltas["int8"].max() < (0.5 if "moe" in name else 0.1) * deltas["int4"].max()


def test_gptq_calibrates_each_block_on_the_quantized_blocks_before_it(monkeypatch):
    """The Hessian given for the first layer of block i (and for an untied lm_head) is that
    of its inputs in the final model, whose earlier blocks and embedding are quantized."""
    given = {}

    def recording_gptq(weight, h, bits, **kw):
        given[id(weight)] = h.clone()
        return gptq(weight, h, bits, **kw)

    gptq = quantize.gptq_
    monkeypatch.setattr(quantize, "gptq_", recording_gptq)
    model = build("llama-2-2")
    batches = calibration()
    quantize.quantize_(model, "int4", "gptq", batches)
    firsts = [block.attn.qkv for block in model.blocks] + [model.lm_head]
    inputs = {layer: [] for layer in firsts}
    hooks = [
        layer.register_forward_pre_hook(lambda m, a: inputs[m].append(a[0].flatten(0, 1)))
        for layer in firsts
    ]
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for hook in hooks:
        hook.remove()
    for layer in firsts:
        expected = hessian(torch.cat(inputs[layer]).double())
        assert torch.allclose(given[id(layer.weight)], expected, rtol=1e-4, atol=1e-6)


def test_bad_arguments():
    model = build("gpt2-2-2")
    with pytest.raises(InputError, match="level"):
        quantize.quantize_(model, "int2", "rtn")
    with pytest.raises(InputError, match="method"):
        quantize.quantize_(model, "int8", "awq", calibration())
    for missing in (None, []):
        with pytest.raises(InputError, match="calibration"):
            quantize.quantize_(model, "int8", "gptq", missing)
    assert torch.equal(model.wte.weight, build("gpt2-2-2").wte.weight)  # nothing touched
