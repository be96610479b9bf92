import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bioknow.base.errors import InputError
from bioknow.measure.export import to_hf
from bioknow.training.model import (
    MOE_FIELDS,
    NAME_FORMS,
    ModelConfig,
    MoE,
    Transformer,
    apply_rope,
    load_balancing_loss,
    rope_cache,
)

FAMILIES = ["gpt2", "llama", "mistral", "gpt2-mlp4", "gpt2-nomlp", "gpt2-moe"]
VOCAB = 256


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(name: str, vocab: int = VOCAB, seed: int = 0, **changes) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(dataclasses.replace(ModelConfig.from_name(name, vocab), **changes))


def shell(name: str, vocab: int = 4096) -> Transformer:
    """A model without storage, for counting parameters."""
    with torch.device("meta"):
        return Transformer(ModelConfig.from_name(name, vocab))


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Parameter counts and FLOPs


@pytest.mark.parametrize(
    "name, paper, exact", [("gpt2-12-12", 87.57e6, 87_571_200), ("gpt2-2-2", 0.816e6, 816_000)]
)
def test_paper_parameter_counts(name, paper, exact):
    P = shell(name).parameter_counts(3275)["P"]
    assert P == exact
    assert abs(P - paper) / paper < 1e-3


@pytest.mark.parametrize("name", ["gpt2-1-1", "gpt2-3-5", "gpt2-6-8"])
def test_gpt2_count_formula_and_tied_embedding(name):
    model = shell(name)
    L, d, V = model.config.n_layer, model.config.d_model, model.config.vocab_size
    counts = model.parameter_counts(1000)
    assert counts["P"] == L * (12 * d * d + 13 * d) + 2 * d + 1000 * d
    assert counts["total"] == counts["non_embedding"] + V * d == numel(model)
    assert model.lm_head.weight is model.wte.weight
    assert model.lm_head.bias is None


def test_llama_is_untied_without_biases():
    model = shell("llama-2-2")
    L, d, V = 2, 128, 4096
    assert model.config.mlp_hidden == 384  # 8d/3 = 341.3, rounded up to a multiple of 64
    counts = model.parameter_counts(1000)
    assert counts["P"] == counts["non_embedding"] + 2 * 1000 * d
    assert counts["total"] == counts["non_embedding"] + 2 * V * d
    assert counts["non_embedding"] == L * (4 * d * d + 3 * d * 384 + 2 * d) + d
    assert model.lm_head.weight is not model.wte.weight
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


@pytest.mark.parametrize("n_head, n_kv", [(1, 1), (2, 2), (3, 1), (4, 4), (6, 2), (8, 4), (10, 2)])
def test_mistral_groups_and_mlp_size(n_head, n_kv):
    model = shell(f"mistral-2-{n_head}")
    d = 64 * n_head
    assert model.config.n_kv_head == n_kv
    for block in model.blocks:
        assert numel(block.mlp) == 10.5 * d * d
        assert numel(block.attn) == 2 * d * d + 2 * d * 64 * n_kv
    assert model.parameter_counts(7)["P"] == model.parameter_counts(0)["P"] + 2 * 7 * d


def test_moe_counts_all_experts():
    model = shell("gpt2-moe-2-2")
    L, d = 2, 128
    per_layer = (4 * d * d + 4 * d) + 4 * d + 32 * d + 32 * (2 * d * d + 2 * d)
    counts = model.parameter_counts(100)
    assert counts["non_embedding"] == L * per_layer + 2 * d
    assert counts["P"] == counts["non_embedding"] + 100 * d


def test_reduced_mlp_variants():
    d = 128
    assert shell("gpt2-mlp4-2-2").parameter_counts(0)["P"] == 2 * (6 * d * d + 10 * d) + 2 * d
    nomlp = shell("gpt2-nomlp-2-2")
    assert nomlp.blocks[0].mlp is None and nomlp.blocks[0].norm2 is None
    assert nomlp.parameter_counts(0)["P"] == 2 * (4 * d * d + 6 * d) + 2 * d


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gpt2-moe"])
def test_flops_count_every_matmul_weight(family):
    model = shell(f"{family}-3-4")
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    L, d = 3, 256
    assert model.config.flops_per_token() == 6 * matmul + 12 * L * d * 512
    assert model.config.flops_per_token(64) == 6 * matmul + 12 * L * d * 64


def test_moe_flops_count_one_expert():
    cfg = ModelConfig.from_name("gpt2-moe-2-2", 4096)
    d = 128
    weights = 2 * (4 * d * d + 32 * d + 2 * d * d) + 4096 * d
    assert cfg.flops_per_token() == 6 * weights + 12 * 2 * d * 512


def test_used_ids_out_of_range():
    with pytest.raises(InputError):
        shell("gpt2-1-1").parameter_counts(4097)


# Names and configs


@pytest.mark.parametrize(
    "name",
    ["gpt3-1-1", "gpt2-0-2", "gpt2-2-0", "gpt2-2", "llama-x-2", "", "GPT2-1-1", "gpt2-1-2 ",
     "gpt2-01-2", "gpt2-moe", "gpt2--1-2", "mistral-1-2-3", "gpt2-mlp2-1-1", "gpt2-1-١"],
)  # fmt: skip
def test_bad_names_raise_input_error(name):
    with pytest.raises(InputError) as error:
        ModelConfig.from_name(name, VOCAB)
    message = str(error.value)
    assert "\n" not in message and repr(name) in message and NAME_FORMS in message


def test_named_sizes():
    cfg = ModelConfig.from_name("gpt2-12-12", 4096)
    assert (cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.d_model, cfg.head_dim) == (
        12,
        12,
        12,
        768,
        64,
    )
    assert (cfg.norm, cfg.bias, cfg.mlp, cfg.mlp_hidden, cfg.tied) == (
        "layernorm",
        True,
        "gelu4",
        3072,
        True,
    )
    assert cfg.block_size == 512 and cfg.vocab_size == 4096
    llama = ModelConfig.from_name("llama-3-3", 4096)
    assert (llama.norm, llama.bias, llama.mlp, llama.mlp_hidden, llama.tied) == (
        "rmsnorm", False, "swiglu", 512, False)  # fmt: skip
    moe = ModelConfig.from_name("gpt2-moe-1-2", 4096)
    assert (moe.mlp, moe.mlp_hidden, moe.n_expert, moe.capacity_train, moe.capacity_eval) == (
        "moe", 128, 32, 2.0, 8.0)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_config_json_round_trip(family):
    cfg = ModelConfig.from_name(f"{family}-3-6", 4096)
    stored = cfg.to_dict()
    assert (family == "gpt2-moe") == all(key in stored for key in MOE_FIELDS)
    assert (family == "gpt2-moe") == any(key in stored for key in MOE_FIELDS)
    again = ModelConfig(**json.loads(json.dumps(stored)))
    assert again == cfg and again.family == family
    older = ModelConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))  # MoE fields in all
    assert older == cfg


@pytest.mark.parametrize(
    "changes", [dict(norm="batchnorm"), dict(mlp="relu"), dict(n_kv_head=4), dict(n_layer=0)]
)
def test_inconsistent_config_raises(changes):
    with pytest.raises(InputError):
        dataclasses.replace(ModelConfig.from_name("gpt2-1-6", VOCAB), **changes)


# Initialisation


def test_init_is_deterministic():
    a, b, c = (
        build("gpt2-moe-2-2", seed=1),
        build("gpt2-moe-2-2", seed=1),
        build("gpt2-moe-2-2", seed=2),
    )
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.wte.weight, c.wte.weight)


@pytest.mark.parametrize("name", ["gpt2-4-4", "llama-4-4", "gpt2-moe-4-2"])
def test_init_follows_gpt2(name):
    model = build(name)
    residual = 0.02 / math.sqrt(2 * 4)
    stds = {}
    for key, p in model.named_parameters():
        if "norm" in key:
            assert torch.all(p == 1) if key.endswith("weight") else torch.all(p == 0), key
        elif key.endswith("bias"):
            assert torch.all(p == 0), key
        else:
            stds.setdefault(key.rsplit(".", 2)[-2], []).append(p.detach().flatten())
    expected = dict(out=residual, qkv=0.02, fc=0.02, gate=0.02, up=0.02, router=0.02, wte=0.02)
    expected["lm_head"] = 0.02
    for kind, values in stds.items():
        std = torch.cat(values).std().item()
        assert abs(std - expected[kind]) < 0.05 * expected[kind], (kind, std)
    assert abs(torch.cat(stds["out"]).mean().item()) < 1e-4


# Forward and backward


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_backward(family):
    model = build(f"{family}-2-2")
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    nothing, loss = model(idx, targets)
    logits = model(idx)[0]
    assert nothing is None and logits.shape == (2, 16, VOCAB) and logits.dtype == torch.float32
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert abs(loss.item() - math.log(VOCAB)) < 0.5
    loss.backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
        # An expert that received no token has no gradient; every other weight has one.
        assert p.grad.abs().sum() > 0 or ".mlp.fc." in key or ".mlp.out." in key, key
    if family == "gpt2-moe":
        assert all(block.mlp.out.weight.grad.abs().sum() > 0 for block in model.blocks)


def test_int32_ids_and_no_targets():
    model = build("llama-1-1")
    idx = torch.randint(0, VOCAB, (3, 10))
    logits, loss = model(idx)
    assert loss is None
    assert torch.equal(model(idx.int())[0], logits)


def test_loss_ignores_minus_100_and_does_not_shift():
    model = build("gpt2-1-1")
    idx = torch.randint(0, VOCAB, (2, 12))
    targets = torch.randint(0, VOCAB, (2, 12))
    targets[0, :5] = -100
    targets[1, -1] = -100
    logits, loss = model(idx)[0], model(idx, targets)[1]
    keep = targets != -100
    expected = -logits.log_softmax(-1)[keep].gather(1, targets[keep][:, None]).mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_moe_loss_adds_the_balance_loss_of_every_layer():
    model = build("gpt2-moe-3-1", aux_loss_coef=0.5)
    balances = []
    for block in model.blocks:
        block.mlp.register_forward_hook(lambda module, args, output: balances.append(output[1]))
    idx, targets = torch.randint(0, VOCAB, (2, 16)), torch.randint(0, VOCAB, (2, 16))
    loss = model(idx, targets)[1]
    assert len(balances) == 3
    balance = sum(balances)
    logits = model(idx)[0]
    cross_entropy = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(loss, cross_entropy + 0.5 * balance, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_causal(family):
    model = build(f"{family}-2-2")  # training mode: MoE capacity 2 drops tokens
    idx = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    t = 9
    changed[0, t] = (idx[0, t] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(idx)[0], model(changed)[0]
    assert torch.allclose(before[:, :t], after[:, :t], atol=1e-6)
    assert not torch.allclose(before[0, t], after[0, t], atol=1e-4)


def test_sequences_longer_than_block_size_extend_the_rotary_cache():
    short = build("mistral-1-2", block_size=8)
    long = build("mistral-1-2", block_size=32)
    idx = torch.randint(0, VOCAB, (2, 20))
    with torch.no_grad():
        logits = short(idx)[0]
        assert torch.allclose(logits, long(idx)[0], atol=1e-6)
        assert torch.allclose(logits[:, :8], short(idx[:, :8])[0], atol=1e-6)
    assert short.cos.shape == (20, 64)
    assert "cos" not in short.state_dict()


def test_overfits_one_sequence():
    model = build("gpt2-1-2")
    seq = torch.randint(0, VOCAB, (1, 33), generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        _, loss = model(seq[:, :-1], seq[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


# Rotary position embedding


def test_rope_matches_the_rotate_half_formula():
    T, hd, base = 512, 64, 10000.0
    x = torch.randn(2, 3, T, hd, generator=torch.Generator().manual_seed(0))
    cos, sin = rope_cache(hd, T, base)
    got = apply_rope(x, cos, sin).double().numpy()
    xs = x.double().numpy()
    half = hd // 2
    angle = np.arange(T)[:, None] * base ** (-2.0 * np.arange(half) / hd)[None, :]
    first, second = xs[..., :half], xs[..., half:]
    expected = np.concatenate(
        [
            first * np.cos(angle) - second * np.sin(angle),
            second * np.cos(angle) + first * np.sin(angle),
        ],
        axis=-1,
    )
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_rope_scores_depend_on_relative_position_only():
    cos, sin = rope_cache(64, 1024, 10000.0)
    q, k = torch.randn(2, 64, generator=torch.Generator().manual_seed(0)).double()

    def score(m, n):
        rq = apply_rope(q, cos[m].double(), sin[m].double())
        rk = apply_rope(k, cos[n].double(), sin[n].double())
        return (rq @ rk).item()

    for m, n, shift in [(5, 2, 7), (3, 40, 100), (100, 0, 411), (0, 0, 999)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=2e-3)
    assert score(0, 0) == pytest.approx((q @ k).item())
    assert abs(score(5, 2) - score(9, 2)) > 1e-3


# Mixture of experts


def forced_moe(**capacity) -> MoE:
    """A gpt2-moe layer (d = 64) whose router sends every positive input to expert 0, with
    a probability well below 1."""
    moe = build("gpt2-moe-1-1", **capacity).blocks[0].mlp
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 0.05
        moe.fc.bias.normal_()
        moe.out.bias.normal_()
    return moe


def expert(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    hidden = F.gelu(x @ moe.fc.weight[e] + moe.fc.bias[e], approximate="tanh")
    return hidden @ moe.out.weight[e] + moe.out.bias[e]


@pytest.mark.parametrize("training, kept_positions", [(True, 2), (False, 8)])
def test_moe_capacity_drops_overflow_in_position_order(training, kept_positions):
    moe = forced_moe().train(training)
    x = torch.rand(2, 32, 64, generator=torch.Generator().manual_seed(0)) + 0.1  # 64 tokens
    with torch.no_grad():
        y, balance = moe(x)
    # Capacity ceil(2 x 64 / 32) = 4 tokens in training, ceil(8 x 64 / 32) = 16 in evaluation,
    # first come first served: both sequences' position 0, then position 1, ...
    kept = y.abs().sum(-1) > 0
    assert kept[:, :kept_positions].all() and not kept[:, kept_positions:].any()
    gate = (x @ moe.router.weight.T).softmax(-1)[..., 0]
    assert 0.05 < gate.min() and gate.max() < 0.5
    expected = expert(moe, 0, x) * gate[..., None]
    assert torch.allclose(y[:, :kept_positions], expected[:, :kept_positions], atol=1e-5)
    # Every token on one expert: f = (1, 0, ...), so the balance loss is 32 x mean gate.
    assert balance.item() == pytest.approx(32 * gate.mean().item(), rel=1e-5)
    assert balance.item() > 2


@pytest.mark.parametrize("training", [True, False])
def test_moe_matches_a_token_by_token_reference(training):
    moe = build("gpt2-moe-1-1", capacity_train=0.5).blocks[0].mlp.train(training)
    x = torch.randn(3, 20, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        moe.router.weight.normal_(0.0, 0.3)
        moe.fc.bias.normal_()
        moe.out.bias.normal_()
        y, _ = moe(x)
        capacity = math.ceil((0.5 if training else 8.0) * 60 / 32)
        expected, load = torch.zeros_like(x), [0] * 32
        for t in range(20):
            for b in range(3):
                probs = (moe.router.weight @ x[b, t]).softmax(-1)
                e = probs.argmax().item()
                if load[e] < capacity:
                    load[e] += 1
                    expected[b, t] = probs[e] * expert(moe, e, x[b, t])
    assert torch.allclose(y, expected, atol=1e-5)
    assert sum(n > 0 for n in load) > 10
    assert (sum(load) < 60) == training


def test_moe_large_capacity_keeps_every_token():
    moe = forced_moe(capacity_train=32.0)
    x = torch.rand(2, 8, 64) + 0.1
    y, _ = moe(x)
    assert (y.abs().sum(-1) > 0).all()


def test_balance_loss_formula():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    # f = (3/4, 1/4), P = (0.6, 0.4): 2 (0.45 + 0.1)
    assert load_balancing_loss(probs).item() == pytest.approx(1.1)
    assert load_balancing_loss(torch.full((10, 32), 1 / 32)).item() == pytest.approx(1.0)
    skewed = torch.full((10, 32), 0.1 / 31)
    skewed[:, 5] = 0.9
    assert load_balancing_loss(skewed).item() == pytest.approx(32 * 0.9)


def test_uniform_router_gives_balance_loss_one():
    moe = build("gpt2-moe-1-2").blocks[0].mlp
    with torch.no_grad():
        moe.router.weight.zero_()
        _, balance = moe(torch.randn(2, 16, 128))
    assert balance.item() == pytest.approx(1.0)


# Agreement with the transformers classes the model is exported to


@pytest.mark.parametrize("name", ["gpt2-2-2", "llama-2-2", "mistral-2-6"])
def test_logits_equal_transformers(name):
    model = build(name, vocab=128).eval()
    with torch.no_grad():
        for p in model.parameters():  # make biases and norm weights non-trivial
            p.add_(0.05 * torch.randn_like(p))
    hf = to_hf(model, eot=0)
    idx = torch.randint(0, 128, (2, 40))
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(idx).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
