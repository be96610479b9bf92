"""Export a finished run as a Hugging Face transformers checkpoint; load any local
transformers causal LM and count its parameters as bioknow counts its own models.

    gpt2-L-H, gpt2-mlp4-L-H   GPTNeoXForCausalLM (sequential residual, full rotary, tied)
    llama-L-H                 LlamaForCausalLM
    mistral-L-H               MistralForCausalLM (grouped key/values, no sliding window)

The export folder holds `config.json`, `model.safetensors`, the dataset's tokenizer and
`bioknow.json` (the run, data and parameter counts it came from) and `bioknow-folder.json`
(an export, and the files it holds: `bioknow.base.ownership`); transformers alone loads
it, and its logits equal bioknow's. gpt2-nomlp and gpt2-moe have no transformers class.
"""

import json
from pathlib import Path

import torch
from tokenizers import processors
from torch import Tensor

from bioknow.base import atomic, integrity, ownership, validate
from bioknow.base.errors import InputError
from bioknow.data import tokenizer as tokenizers
from bioknow.training.model import ModelConfig, Transformer

# bioknow module names inside a block -> the transformers ones, per family
_GPT_NEOX_LAYER = {
    "norm1": "input_layernorm",
    "norm2": "post_attention_layernorm",
    "attn.out": "attention.dense",
    "mlp.fc": "mlp.dense_h_to_4h",
    "mlp.out": "mlp.dense_4h_to_h",
}
_LLAMA_LAYER = {
    "norm1": "input_layernorm",
    "norm2": "post_attention_layernorm",
    "attn.out": "self_attn.o_proj",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.out": "mlp.down_proj",
}


def hf_config(cfg: ModelConfig, eot: int):
    """The transformers config of the class a bioknow ModelConfig maps to."""
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig

    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.mlp_hidden,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        max_position_embeddings=cfg.block_size,
        tie_word_embeddings=cfg.tied,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        dtype="float32",
    )
    rope = dict(rope_type="default", rope_theta=cfg.rope_base)
    if cfg.mlp in ("gelu4", "gelu1"):
        return GPTNeoXConfig(
            **common,
            hidden_act="gelu_pytorch_tanh",  # F.gelu(approximate="tanh"), as bioknow's MLP
            use_parallel_residual=False,
            layer_norm_eps=cfg.norm_eps,
            attention_bias=cfg.bias,
            rope_parameters=dict(rope, partial_rotary_factor=1.0),
        )
    if cfg.mlp == "swiglu":
        llama = dict(
            common,
            num_key_value_heads=cfg.n_kv_head,
            head_dim=cfg.head_dim,
            hidden_act="silu",
            rms_norm_eps=cfg.norm_eps,
            rope_parameters=rope,
        )
        if cfg.family == "mistral":
            return MistralConfig(**llama, sliding_window=None)
        return LlamaConfig(**llama, attention_bias=cfg.bias, mlp_bias=cfg.bias)
    kind = "mixture-of-experts layers" if cfg.mlp == "moe" else "blocks without feed-forward layers"
    raise InputError(f"model {cfg.name} cannot be exported: no transformers class has {kind}")


def hf_state_dict(model: Transformer) -> dict[str, Tensor]:
    """bioknow's weights under the transformers names (GPT-NeoX or Llama/Mistral layout)."""
    cfg = model.config
    neox = cfg.mlp in ("gelu4", "gelu1")
    base = "gpt_neox" if neox else "model"
    top = {
        "wte": f"{base}.embed_in" if neox else f"{base}.embed_tokens",
        "norm": f"{base}.final_layer_norm" if neox else f"{base}.norm",
        "lm_head": "lm_head",
    }
    layer = _GPT_NEOX_LAYER if neox else _LLAMA_LAYER
    sizes = [n * cfg.head_dim for n in (cfg.n_head, cfg.n_kv_head, cfg.n_kv_head)]
    theirs = {}
    for key, value in model.state_dict().items():
        module, kind = key.rsplit(".", 1)
        if not module.startswith("blocks."):
            theirs[f"{top[module]}.{kind}"] = value
            continue
        _, i, name = module.split(".", 2)
        prefix = f"{base}.layers.{i}"
        if name != "attn.qkv":
            theirs[f"{prefix}.{layer[name]}.{kind}"] = value
        elif neox:  # rows [q | k | v] -> per head [q k v], GPT-NeoX's fused layout
            per_head = value.view(3, cfg.n_head, cfg.head_dim, -1).transpose(0, 1)
            theirs[f"{prefix}.attention.query_key_value.{kind}"] = per_head.reshape(value.shape)
        else:
            for p, rows in zip("qkv", value.split(sizes), strict=True):
                theirs[f"{prefix}.self_attn.{p}_proj.{kind}"] = rows
    return theirs


def to_hf(model: Transformer, eot: int):
    """The transformers causal LM equal to a bioknow Transformer, its weights copied.
    InputError for the families no transformers class matches."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(hf_config(model.config, eot), dtype=torch.float32)
    hf.load_state_dict(hf_state_dict(model), strict=True)
    return hf.eval()


def legacy_config(cfg: ModelConfig) -> dict:
    """The rotary setting in the keys transformers 4.x reads: it ignores transformers 5's
    `rope_parameters`, and GPT-NeoX would silently fall back to rotary_pct = 0.25."""
    keys = {"rope_theta": cfg.rope_base, "rope_scaling": None, "torch_dtype": "float32"}
    if cfg.mlp in ("gelu4", "gelu1"):
        keys.update(rotary_pct=1.0, rotary_emb_base=cfg.rope_base)
    return keys


def legacy_merges(tokenizer: dict) -> dict:
    """A BPE's merges as "a b" strings, the form tokenizers < 0.20 (transformers < 4.45)
    reads and later versions still read; kept as pairs where a part holds a space."""
    merges = tokenizer["model"].get("merges")
    if merges and all(isinstance(m, list) and " " not in "".join(m) for m in merges):
        tokenizer["model"]["merges"] = [" ".join(m) for m in merges]
    return tokenizer


def write_tokenizer(tokenizer_file: Path, block_size: int, folder: Path) -> None:
    """Write the dataset's tokenizer as a fast tokenizer that transformers 4.x and 5.x
    both load. The end-of-text token is also
    beginning-of-sequence and padding, and encoding puts it in front of the text, as
    training puts it in front of every biography (so `tok(name)` starts a biography)."""
    tok = tokenizers.load(str(tokenizer_file))
    eot_id = tokenizers.eot_id(tok)
    eot = tok.id_to_token(eot_id)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{eot} $A", pair=f"{eot} $A {eot} $B", special_tokens=[(eot, eot_id)]
    )
    atomic.write_json(folder / "tokenizer.json", legacy_merges(json.loads(tok.to_str())))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # a class name 4.x and 5.x both know
        "bos_token": eot,
        "eos_token": eot,
        "pad_token": eot,
        "unk_token": None,
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],  # 4.x: no token_type_ids
    }
    atomic.write_json(folder / "tokenizer_config.json", settings)


def export_run(run, out, overwrite: bool = False) -> dict:
    """Write the finished run `run` as a transformers checkpoint in the folder `out`."""
    from bioknow.training.runfolder import read_config
    from bioknow.training.train import load_run, open_run_dataset

    validate.check(validate.EXPORT, {"out": out})
    run, out = Path(run), Path(out)
    config = read_config(run)
    if "model.safetensors" not in integrity.load_record(run):
        raise InputError(
            f"{run}: not a finished run (no final model.safetensors; if training ended, "
            f"finish it with: bioknow train --resume --out {run})"
        )

    def claim():
        ownership.claim(out, "export", overwrite, [run, config.get("data")])

    claim()
    config, model, _ = load_run(run, "cpu")
    if config.get("useful_prefix"):
        raise InputError(f"{run}: a run with a useful-data prefix token cannot be exported")
    ds = open_run_dataset(config)
    eot = tokenizers.eot_id(ds.tokenizer)
    hf = to_hf(model, eot)
    with atomic.new_dir(out, claim) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        hf_settings = json.loads((tmp / "config.json").read_text())
        atomic.write_json(tmp / "config.json", hf_settings | legacy_config(model.config))
        write_tokenizer(ds.path / "tokenizer.json", model.config.block_size, tmp)
        about = {"run": str(run), "model": model.config.name}
        about.update((k, config[k]) for k in ("data", "data_manifest_sha256", "used_ids", "params"))
        atomic.write_json(tmp / "bioknow.json", about)
        files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
        ownership.write_marker(tmp, "export", files)
    return {
        "class": type(hf).__name__,
        "out": str(out),
        "params": hf_parameter_counts(hf, config["used_ids"]),
    }


def exported_data(path) -> str:
    """The dataset folder a bioknow export's run was trained on (its bioknow.json), refused
    if its manifest changed since."""
    about = Path(path) / "bioknow.json"
    if not about.is_file():
        raise InputError(
            f"{path}: not a bioknow export (no bioknow.json); name its dataset with --data DIR"
        )
    source = integrity.read_json(about)
    data = source.get("data") if isinstance(source, dict) else None
    if not isinstance(data, str):
        raise InputError(f"{about}: names no dataset; name it with --data DIR")
    recorded, manifest = source.get("data_manifest_sha256"), Path(data) / "manifest.json"
    if recorded and manifest.is_file() and atomic.sha256(manifest) != recorded:
        raise InputError(
            f"{data}: not the dataset the exported run was trained on (its manifest.json "
            "differs from the one recorded in bioknow.json)"
        )
    return data


def load_hf(path, device="cpu"):
    """A local transformers causal LM folder: (model in float32 on `device`, eval mode,
    tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise InputError(f"{path}: not a transformers model folder (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # transformers raises many kinds (OSError, ValueError, KeyError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load transformers model {str(path)!r}: {first}") from None
    return model.to(device).eval(), tokenizer


def hf_parameter_counts(model, used_ids: int) -> dict[str, int]:
    """P, total and non-embedding parameters of a transformers causal LM, counted as
    `Transformer.parameter_counts` counts them (tied weights once)."""
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    vocab, d_model = embedding.shape
    if not 0 <= used_ids <= vocab:
        raise InputError(f"used token ids must be in 0..{vocab}, not {used_ids}")
    tied = output is embedding
    total = sum(p.numel() for p in model.parameters())
    non_embedding = total - embedding.numel() - (0 if tied else output.numel())
    return {
        "P": non_embedding + (1 if tied else 2) * used_ids * d_model,
        "total": total,
        "non_embedding": non_embedding,
    }
