"""LoRA and QLoRA adapters (PEFT) on the policy under training.

An adapter goes on before the warm start and again, fresh, before GRPO. Each stage then saves its
merged weights as a plain checkpoint, which `trustee eval` and vLLM load like any other, and its
adapter beside it (`<dir>_adapter`), relative to the weights the stage started from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from trustee_rl.policy.chat import ChatFormat
from trustee_rl.policy.model import save_policy
from trustee_rl.train.config import LoraConfig, TrainingRefused

ADAPTER_SUFFIX = "_adapter"


def adapter_dir(checkpoint: Path) -> Path:
    """Where the adapter of the merged checkpoint `checkpoint` is saved: beside it."""
    return checkpoint.with_name(checkpoint.name + ADAPTER_SUFFIX)


def check_qlora_support(config: LoraConfig) -> None:
    """Refuse QLoRA where its 4-bit kernels cannot run, before anything is loaded or stored."""
    if not (config.enabled and config.qlora):
        return
    missing = [
        name
        for name, present in (
            ("CUDA", torch.cuda.is_available()),
            ("bitsandbytes", importlib.util.find_spec("bitsandbytes") is not None),
        )
        if not present
    ]
    if missing:
        raise TrainingRefused(
            f"lora.qlora needs {' and '.join(missing)}, which this machine lacks: "
            "set lora.qlora=false to train a LoRA adapter on the full-precision model"
        )


def base_quantization(config: LoraConfig) -> Any:
    """The 4-bit (NF4) load of a QLoRA base; None for any other run."""
    if not (config.enabled and config.qlora):
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def with_adapter(
    model: Any, config: LoraConfig, top_layers: int | None, gradient_checkpointing: bool
) -> Any:
    """`model` wrapped with a fresh adapter, the only trainable weights; with `top_layers`, only
    the top that many transformer layers are adapted, so backpropagation stops there.
    "all-linear" adapts every linear layer of the transformer blocks (not the output head)."""
    import peft

    if config.qlora:
        model = peft.prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    blocks = model.get_decoder().layers
    layers = None
    if top_layers is not None:
        layers = list(range(max(len(blocks) - top_layers, 0), len(blocks)))
    targets = config.target_modules
    if targets == "all-linear":  # spelled out: PEFT takes a layer subset only with a name list
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in blocks.named_modules()
                if isinstance(module, torch.nn.Linear)
            }
        )
    settings = peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, settings)


def save_merged(
    model: Any, tokenizer: Any, out_dir: Path, chat_format: ChatFormat | None = None
) -> Any:
    """Save the adapter beside `out_dir` and the merged weights into it. Returns the model to go
    on with, equal in outputs to what was saved: the merged model, or for a 4-bit base (whose
    weights cannot hold the merge exactly) the adapted model itself."""
    import peft

    adapter = adapter_dir(out_dir)
    model.save_pretrained(adapter)
    if not getattr(model, "is_loaded_in_4bit", False):
        merged = model.merge_and_unload()
        save_policy(merged, tokenizer, out_dir, chat_format)
        return merged
    from transformers import AutoModelForCausalLM

    # The base again, unquantized and on the CPU, so the merged checkpoint is exact.
    base = AutoModelForCausalLM.from_pretrained(
        model.peft_config["default"].base_model_name_or_path,
        dtype=torch.bfloat16,
        local_files_only=True,  # loaded moments ago, so in the local cache
    )
    merged = peft.PeftModel.from_pretrained(base, adapter).merge_and_unload()
    save_policy(merged, tokenizer, out_dir, chat_format)
    return model
