"""One configurable decoder-only transformer for every model family (docs/design.md §5).

`ModelConfig.from_name` parses `gpt2-L-H`, `llama-L-H`, `mistral-L-H`, `gpt2-mlp4-L-H`,
`gpt2-nomlp-L-H` and `gpt2-moe-L-H` (L layers, H heads of 64 dimensions, d = 64 H); one
`Transformer` builds them all, switched by the config's fields. Every family uses rotary
position embedding on the full head dimension in the Hugging Face "rotate_half"
convention, so that the weights, exported to transformers' GPT-NeoX / Llama / Mistral
classes, give the same logits. The model knows nothing of training loops, compilation or
parallelism.

Weight layout, for exporters: `blocks.i.attn.qkv.weight` stacks the query, key and value
projections by rows, [q (H x 64) | k (KV x 64) | v (KV x 64)], each head's 64 rows
contiguous; linear layers are `torch.nn.Linear` (out x in); expert layers are stacked
[n_expert, in, out].
"""

import dataclasses
import difflib
import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioknow.base.errors import InputError

HEAD_DIM = 64
NAME_FORMS = (
    "gpt2-L-H, llama-L-H, mistral-L-H, gpt2-mlp4-L-H, gpt2-nomlp-L-H or gpt2-moe-L-H "
    "(L layers >= 1, H heads >= 1)"
)
FAMILIES = ("gpt2", "gpt2-mlp4", "gpt2-nomlp", "gpt2-moe", "llama", "mistral")
_NAME = re.compile(  # family-L-H
    rf"({'|'.join(FAMILIES)})-([1-9]\d*)-([1-9]\d*)", re.ASCII
)
MOE_FIELDS = ("n_expert", "capacity_train", "capacity_eval", "aux_loss_coef")
# Weight matrices in a feed-forward layer, in units of d_model x mlp_hidden (MoE: one expert).
_MLP_MATRICES = {"gelu4": 2, "gelu1": 2, "swiglu": 3, "moe": 2, "none": 0}


def nearest(name: str) -> str:
    """ "; did you mean 'gpt2-2-2'?" for a mistyped name ("gtp2-2-2"), else "": difflib's
    nearest valid name with the same layers and heads."""
    sizes = re.search(r"-(\d+)-(\d+)$", name)
    tail = sizes[0] if sizes else "-2-2"
    candidates = [f"{family}{tail}" for family in FAMILIES if _NAME.fullmatch(f"{family}{tail}")]
    close = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclasses.dataclass
class ModelConfig:
    """Everything that fixes a model's architecture; JSON-serialisable with `asdict`."""

    name: str
    family: str
    n_layer: int
    n_head: int
    n_kv_head: int
    d_model: int
    vocab_size: int
    mlp_hidden: int
    block_size: int = 512
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    bias: bool = True
    mlp: str = "gelu4"  # "gelu4" | "gelu1" | "none" | "swiglu" | "moe"
    tied: bool = True
    n_expert: int = 32
    capacity_train: float = 2.0
    capacity_eval: float = 8.0
    aux_loss_coef: float = 0.01
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.norm not in ("layernorm", "rmsnorm"):
            raise InputError(f"model norm must be layernorm or rmsnorm, not {self.norm!r}")
        if self.mlp not in _MLP_MATRICES:
            kinds = ", ".join(_MLP_MATRICES)
            raise InputError(f"model mlp must be one of {kinds}, not {self.mlp!r}")
        if min(self.n_layer, self.n_head, self.n_kv_head, self.vocab_size, self.block_size) < 1:
            raise InputError("model layers, heads, vocabulary and block size must be >= 1")
        if self.d_model % (2 * self.n_head) or self.n_head % self.n_kv_head:
            raise InputError(
                f"model d_model {self.d_model} must split into {self.n_head} heads of even size, "
                f"and {self.n_head} heads into {self.n_kv_head} key/value groups"
            )

    @classmethod
    def from_name(cls, name: str, vocab_size: int) -> "ModelConfig":
        """The config of a named model; `vocab_size` is the (padded) number of embedding rows."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise InputError(f"unknown model name {name!r}: expected {NAME_FORMS}{nearest(name)}")
        family, n_layer, n_head = match[1], int(match[2]), int(match[3])
        d = HEAD_DIM * n_head
        n_kv_head = n_head
        if family == "mistral":  # grouped-query attention
            n_kv_head = 4 if n_head % 4 == 0 else 1 if n_head % 2 else 2
        llama = dict(norm="rmsnorm", bias=False, mlp="swiglu", tied=False)
        arch = {
            "gpt2": dict(mlp="gelu4", mlp_hidden=4 * d),
            "gpt2-mlp4": dict(mlp="gelu1", mlp_hidden=d),
            "gpt2-nomlp": dict(mlp="none", mlp_hidden=0),
            "gpt2-moe": dict(mlp="moe", mlp_hidden=d),
            "llama": dict(llama, mlp_hidden=math.ceil(8 * d / 3 / 64) * 64),
            "mistral": dict(llama, mlp_hidden=7 * d // 2),
        }[family]
        return cls(
            name=name,
            family=family,
            n_layer=n_layer,
            n_head=n_head,
            n_kv_head=n_kv_head,
            d_model=d,
            vocab_size=vocab_size,
            **arch,
        )

    def to_dict(self) -> dict:
        """The config as config.json holds it: the mixture-of-experts fields only for an
        MoE model (`ModelConfig(**d)` takes it, and older configs that have them)."""
        fields = dataclasses.asdict(self)
        if self.mlp != "moe":
            for key in MOE_FIELDS:
                del fields[key]
        return fields

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def flops_per_token(self, seq_len: int = 512) -> int:
        """Training FLOPs per token: 6 x the matmul weights (lm_head included; under MoE the
        router and one expert per layer) + 12 L d T for the attention scores and values."""
        d = self.d_model
        attention = 2 * d * d + 2 * d * self.n_kv_head * self.head_dim
        mlp = _MLP_MATRICES[self.mlp] * d * self.mlp_hidden
        if self.mlp == "moe":
            mlp += d * self.n_expert
        weights = self.n_layer * (attention + mlp) + self.vocab_size * d
        return 6 * weights + 12 * self.n_layer * d * seq_len


def rope_cache(head_dim: int, length: int, base: float) -> tuple[Tensor, Tensor]:
    """cos and sin, [length, head_dim], of rotary angles position x base^(-2i / head_dim),
    the frequencies repeated over the two halves of the head (`rotate_half` convention)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [..., T, head_dim] by the angles of positions 0..T-1."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def load_balancing_loss(probs: Tensor) -> Tensor:
    """Switch Transformer auxiliary loss E sum_i f_i P_i over router probabilities [N, E]:
    f_i the share of tokens whose top expert is i, P_i the mean probability of i. It is 1
    when routing is balanced and grows up to E as it concentrates."""
    n_expert = probs.size(-1)
    share = F.one_hot(probs.argmax(-1), n_expert).float().mean(0)
    return n_expert * (share * probs.mean(0)).sum()


def _norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
    return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)


class Attention(nn.Module):
    """Causal multi-head attention with rotary positions and optional grouped key/values."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.head_dim, self.grouped = cfg.head_dim, cfg.n_kv_head != cfg.n_head
        self.sizes = [n * cfg.head_dim for n in (cfg.n_head, cfg.n_kv_head, cfg.n_kv_head)]
        self.qkv = nn.Linear(cfg.d_model, sum(self.sizes), bias=cfg.bias)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        q, k, v = (
            t.unflatten(-1, (-1, self.head_dim)).transpose(1, 2)  # [B, heads, T, head_dim]
            for t in self.qkv(x).split(self.sizes, dim=-1)
        )
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.grouped)
        return self.out(y.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    """d -> hidden -> d with tanh-approximated GELU (GPT-2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=cfg.bias)
        self.out = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.gelu(self.fc(x), approximate="tanh"))


class SwiGLU(nn.Module):
    """Gated SiLU feed-forward (LLaMA): out(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=cfg.bias)
        self.up = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=cfg.bias)
        self.out = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.silu(self.gate(x)) * self.up(x))


class ExpertLinear(nn.Module):
    """n independent linear layers, applied to a batch [n, tokens, d_in]."""

    def __init__(self, n: int, d_in: int, d_out: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n, d_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = torch.bmm(x, self.weight)
        return y if self.bias is None else y + self.bias[:, None]


class MoE(nn.Module):
    """Switch Transformer feed-forward: each token goes to its top-1 expert (a GELU MLP) and
    its output is scaled by that expert's router probability. An expert takes at most
    ceil(capacity factor x tokens / n_expert) tokens, first come first served in position
    order (all sequences' position 0, then position 1, ...), which keeps the model causal;
    the output of a dropped token is 0, so only the residual carries it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_expert = cfg.n_expert
        self.capacity_train, self.capacity_eval = cfg.capacity_train, cfg.capacity_eval
        self.router = nn.Linear(cfg.d_model, cfg.n_expert, bias=False)
        self.fc = ExpertLinear(cfg.n_expert, cfg.d_model, cfg.mlp_hidden, cfg.bias)
        self.out = ExpertLinear(cfg.n_expert, cfg.mlp_hidden, cfg.d_model, cfg.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's output and its load-balancing loss."""
        B, T, d = x.shape
        tokens = x.transpose(0, 1).reshape(T * B, d)
        probs = self.router(tokens).float().softmax(-1)
        gate, expert = probs.max(-1)
        factor = self.capacity_train if self.training else self.capacity_eval
        capacity = math.ceil(factor * T * B / self.n_expert)
        chosen = F.one_hot(expert, self.n_expert)
        rank = (chosen.cumsum(0) * chosen).sum(-1) - 1  # arrivals before it at its expert
        # Each token's row in a [n_expert x capacity] buffer; the extra last row takes the
        # dropped tokens, and its output is replaced by 0.
        slot = torch.where(rank < capacity, expert * capacity + rank, self.n_expert * capacity)
        buffer = tokens.new_zeros(self.n_expert * capacity + 1, d).index_add(0, slot, tokens)
        hidden = F.gelu(self.fc(buffer[:-1].view(self.n_expert, capacity, d)), approximate="tanh")
        outputs = self.out(hidden).view(-1, d)
        outputs = torch.cat([outputs, outputs.new_zeros(1, d)])
        y = outputs[slot] * gate[:, None].to(outputs.dtype)
        return y.view(T, B, d).transpose(0, 1), load_balancing_loss(probs)


class Block(nn.Module):
    """Pre-norm residual block: attention, then the feed-forward layer (if any)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.attn = _norm(cfg), Attention(cfg)
        kinds = {"gelu4": MLP, "gelu1": MLP, "swiglu": SwiGLU, "moe": MoE}
        self.mlp = kinds[cfg.mlp](cfg) if cfg.mlp in kinds else None
        self.norm2 = _norm(cfg) if self.mlp is not None else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor | float]:
        """The new residual stream and the block's load-balancing loss (0.0 without MoE)."""
        x = x + self.attn(self.norm1(x), cos, sin)
        balance = 0.0
        if isinstance(self.mlp, MoE):
            h, balance = self.mlp(self.norm2(x))
            x = x + h
        elif self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x, balance


class Transformer(nn.Module):
    """Token embedding, n_layer blocks, final norm, lm_head (tied to the embedding or not)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = _norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied:
            self.lm_head.weight = self.wte.weight
        cos, sin = rope_cache(cfg.head_dim, cfg.block_size, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self):
        """GPT-2 initialisation: weights N(0, 0.02), residual output projections
        N(0, 0.02 / sqrt(2 n_layer)), biases 0, norm weights 1."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # norm weights
                nn.init.ones_(p)
            elif name.endswith(".out.weight"):
                nn.init.normal_(p, 0.0, residual_std)
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def _rope(self, T: int) -> tuple[Tensor, Tensor]:
        """cos and sin for T positions; the cache grows past block_size on demand."""
        if T > self.cos.size(0):
            cos, sin = rope_cache(self.config.head_dim, T, self.config.rope_base)
            self.cos, self.sin = cos.to(self.cos), sin.to(self.sin)
        return self.cos[:T], self.sin[:T]

    def forward(
        self, idx: Tensor, targets: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """(logits [B, T, vocab] in float32, None) for token ids [B, T]; with targets
        (aligned with idx, -100 ignored) instead (None, the mean cross-entropy plus
        aux_loss_coef x the MoE balance loss): training never materializes the logits
        outside `loss`, which a trainer may compile on its own."""
        x, balance = self.hidden(idx)
        if targets is None:
            return self.logits(x), None
        return None, self.loss(x, targets) + self.config.aux_loss_coef * balance

    def hidden(self, idx: Tensor) -> tuple[Tensor, Tensor | float]:
        """The residual stream after the last block [B, T, d], and the summed MoE balance
        loss (0.0 without MoE)."""
        cos, sin = self._rope(idx.size(1))
        x = self.wte(idx.long())
        balance = 0.0
        for block in self.blocks:
            x, block_balance = block(x, cos, sin)
            balance = balance + block_balance
        return x, balance

    def logits(self, x: Tensor) -> Tensor:
        """The final norm and the output layer, in float32."""
        return self.lm_head(self.norm(x)).float()

    def loss(self, x: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of the next-token logits of x against targets (-100 ignored)."""
        logits = self.logits(x)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=-100)

    def parameter_counts(self, used_ids: int) -> dict[str, int]:
        """P (docs/design.md §5: non-embedding parameters plus the embedding rows, input and output,
        of the `used_ids` token ids in the data), the total (tied weights once) and the
        non-embedding count."""
        cfg = self.config
        if not 0 <= used_ids <= cfg.vocab_size:
            raise InputError(f"used token ids must be in 0..{cfg.vocab_size}, not {used_ids}")
        copies = 1 if cfg.tied else 2
        total = sum(p.numel() for p in self.parameters())
        non_embedding = total - copies * self.wte.weight.numel()
        return {
            "P": non_embedding + copies * used_ids * cfg.d_model,
            "total": total,
            "non_embedding": non_embedding,
        }
