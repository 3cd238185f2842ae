"""LoRA adapters in PEFT's folder format: merge inputs, and extraction from a fine-tune.

A PEFT LoRA adapter is a folder with ``adapter_config.json`` and
``adapter_model.safetensors`` (what ``peft.PeftModel.save_pretrained`` writes).

**As a merge input** (:func:`materialise_adapter`, used by the merge plan when a recipe
lists an adapter folder as a model): every base tensor a LoRA pair targets becomes
``W + scaling · B A`` (transposed for embeddings, ``lora_embedding_A/B``, and for
``fan_in_fan_out`` Conv1D layers), with ``scaling = lora_alpha / r`` (``/ √r`` with
``use_rslora``; ``rank_pattern`` and ``alpha_pattern`` per module, matched as PEFT does);
full tensors the adapter saves (biases with ``bias: all``, ``modules_to_save``) replace
the base's; every other tensor is the base's. The result is written once, tensor by
tensor, into a scratch folder the merge reads like any model. The base is the recipe's
``base_model`` (else the adapter's ``base_model_name_or_path`` when that is a folder).
DoRA and other PEFT types are refused with a message.

**Extraction** (:func:`extract_lora`, ``modularevo extract-lora``): the task vector
``θ_ft − θ_0`` of each changed weight matrix is cut to rank ``r`` by truncated SVD,
``Δ ≈ U_r Σ_r V_rᵀ = B A`` with ``B = U_r Σ_r^½`` and ``A = Σ_r^½ V_rᵀ`` (scaling 1:
``lora_alpha = r``); embedding tables (named ``*embed*``, ``wte``, ``wpe``, ``shared``, or
listed) become ``lora_embedding_A/B``. Changed biases are saved in full (``bias: all``) and
other changed tensors (LayerNorm) as ``modules_to_save``, so at full rank the adapter
reproduces the fine-tune up to float32 rounding; ``lora_only`` leaves them out. Tensors
only the fine-tune has (a task head) are not part of the adapter (they are listed).
``peft.PeftModel.from_pretrained(base_model, folder)`` loads the result.

Example:
    >>> report = extract_lora("base", "runs/ft/model", "lora-r16", rank=16)  # doctest: +SKIP
    >>> report.relative_error  # doctest: +SKIP
    0.31
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.io.hf_files import read_config
from modularevo.io.reader import model_dir, open_model
from modularevo.io.writer import ShardedWriter, TensorSpec
from modularevo.merging._linalg import robust_svd
from modularevo.utils.atomic import atomic_dir, check_output_path
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import safetensors.torch as st
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")
    st = LazyModule("safetensors.torch")

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
_PAIR = re.compile(r"(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight")
_EMB = re.compile(r"(?P<module>.+)\.(?P<part>lora_embedding_A|lora_embedding_B)")
_EMBED_NAMES = frozenset({"wte", "wpe", "shared"})


def is_lora_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a PEFT adapter folder (config and safetensors weights)."""
    p = Path(path)
    return p.is_dir() and (p / ADAPTER_CONFIG).is_file() and (p / ADAPTER_WEIGHTS).is_file()


def adapter_config(path: str | Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, checked to be a plain LoRA.

    Raises:
        InputError: unreadable, not ``peft_type: LORA``, or a LoRA variant (DoRA, LoRA
            biases) whose update is not ``scaling · B A``.
    """
    file = Path(path) / ADAPTER_CONFIG
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(file)!r} ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        got = cfg.get("peft_type") if isinstance(cfg, dict) else cfg
        raise InputError(f"{str(path)!r} is a {got!r} adapter; only LoRA adapters are merged")
    for flag in ("use_dora", "lora_bias"):
        if cfg.get(flag):
            raise InputError(
                f"{str(path)!r} sets {flag}: true; its update is not scaling·B·A, merge the "
                "adapter into its base with peft's merge_and_unload() and use that folder"
            )
    return cfg


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup: the first key ``k`` with
    ``module`` matching ``(.*\\.)?(k)$``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scaling(cfg: Mapping[str, Any], module: str) -> float:
    """``lora_alpha / r`` for ``module`` (``/ √r`` with ``use_rslora``)."""
    r = float(_pattern_value(cfg.get("rank_pattern") or {}, module, cfg["r"]))
    alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", 8)))
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def match_name(name: str, names: Collection[str]) -> str | None:
    """The base tensor for an adapter tensor ``name``: the same name, else the one base
    name ending in ``.name``, else ``name`` without its leading components (an adapter
    trained on a wrapper, e.g. ``bert.encoder…`` for a base saved as ``encoder…``)."""
    if name in names:
        return name
    ends = [n for n in names if n.endswith("." + name)]
    if len(ends) == 1:
        return ends[0]
    parts = name.split(".")
    for i in range(1, len(parts)):
        if ".".join(parts[i:]) in names:
            return ".".join(parts[i:])
    return None


@dataclass
class AdapterUpdate:
    """What an adapter does to its base, per base tensor name.

    Attributes:
        deltas: float32 ``scaling · B A`` added to the base tensor.
        values: full tensors that replace the base's (biases, ``modules_to_save``).
    """

    deltas: dict[str, Tensor] = field(default_factory=dict)
    values: dict[str, Tensor] = field(default_factory=dict)


def read_adapter(path: str | Path, base_names: Collection[str]) -> AdapterUpdate:
    """Read the adapter at ``path`` as updates of the base tensors ``base_names``.

    Raises:
        InputError: not a LoRA adapter, a lone A or B, or adapter tensors that match no
            base tensor (listed).
    """
    cfg = adapter_config(path)
    tensors = st.load_file(str(Path(path) / ADAPTER_WEIGHTS))
    names = set(base_names)
    pairs: dict[str, dict[str, Tensor]] = {}
    update, unmatched = AdapterUpdate(), []
    for key, t in tensors.items():
        k = key.removeprefix(PREFIX)
        m = _PAIR.fullmatch(k) or _EMB.fullmatch(k)
        if m is not None:
            pairs.setdefault(m["module"], {})[m["part"]] = t
            continue
        if ".original_module." in k or "lora_magnitude_vector" in k:
            continue  # PEFT's copy of the untouched module; DoRA is refused by the config
        k = k.replace(".modules_to_save.", ".").replace(".base_layer.", ".")
        target = match_name(k, names)
        if target is None:
            unmatched.append(key)
        else:
            update.values[target] = t
    for module, ab in sorted(pairs.items()):
        emb = "lora_embedding_A" in ab or "lora_embedding_B" in ab
        a, b = (ab.get("lora_embedding_A"), ab.get("lora_embedding_B")) if emb else (
            ab.get("lora_A"), ab.get("lora_B"))  # fmt: skip
        if a is None or b is None:
            raise InputError(f"{str(path)!r}: module {module!r} has a LoRA A or B but not both")
        delta = (b.float() @ a.float()) * lora_scaling(cfg, module)  # (out, in)
        if emb or cfg.get("fan_in_fan_out"):
            delta = delta.T  # embeddings (num, dim) and Conv1D (in, out) store the transpose
        target = match_name(module + ".weight", names)
        if target is None:
            unmatched.append(module)
        else:
            update.deltas[target] = delta
    if unmatched:
        raise InputError(
            f"{len(unmatched)} tensor(s) of adapter {str(path)!r} match no tensor of its base: "
            f"{unmatched[:5]}; is the recipe's base_model the model the adapter was trained on?"
        )
    return update


def adapter_base(path: str | Path, base: str | None) -> str:
    """The base an adapter applies to: ``base``, else its ``base_model_name_or_path``.

    Raises:
        InputError: neither names a local folder.
    """
    if base:
        return base
    named = adapter_config(path).get("base_model_name_or_path")
    if named and Path(named).is_dir():
        return str(named)
    raise InputError(
        f"LoRA adapter {str(path)!r} needs its base model: set base_model in the recipe "
        f"(the adapter names {named!r}, which is not a local folder)"
    )


def materialise_adapter(adapter: str | Path, base: str | Path, dest: str | Path) -> Path:
    """Write ``base`` with the adapter's update applied into the folder ``dest``.

    Tensors keep the base's dtypes; the update is added in float32.

    Raises:
        InputError: see :func:`read_adapter`; an update whose shape differs from its base
            tensor.
    """
    reader = open_model(base)
    try:
        update = read_adapter(adapter, reader.names())
        for name, t in [*update.deltas.items(), *update.values.items()]:
            if tuple(t.shape) != tuple(reader.tensors[name].shape):
                raise InputError(
                    f"adapter {str(adapter)!r} gives {name!r} the shape {tuple(t.shape)} but "
                    f"the base {str(base)!r} has {tuple(reader.tensors[name].shape)}"
                )
        names = reader.names()
        specs = [TensorSpec(n, reader.tensors[n].code, reader.tensors[n].shape) for n in names]
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        with ShardedWriter(out, specs, shard_bytes=2 << 30) as writer:
            for n in names:
                t = reader.read(n)
                if n in update.deltas:
                    t = (t.float() + update.deltas[n]).to(t.dtype)
                elif n in update.values:
                    t = update.values[n].to(t.dtype)
                writer.write(n, t.contiguous())
    finally:
        reader.close()
    return out


# ------------------------------------------------------------------ extraction


def lora_factors(delta: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``(A, B)`` with ``B A`` the best rank-``rank`` approximation of ``delta`` (out, in):
    ``A = Σ_r^½ V_rᵀ`` (rank, in), ``B = U_r Σ_r^½`` (out, rank)."""
    u, s, vh = robust_svd(delta.float(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).contiguous(), (u[:, :rank] * root).contiguous()


@dataclass(frozen=True)
class LoraExtraction:
    """What :func:`extract_lora` wrote.

    Attributes:
        path: the adapter folder.
        rank: the requested rank ``r`` (a matrix with fewer dimensions keeps all of them).
        matrices: weight matrices turned into LoRA pairs.
        full_tensors: changed tensors saved in full (biases, ``modules_to_save``).
        relative_error: ``‖Δ − B A‖ / ‖Δ‖`` over all LoRA matrices together (0 at full rank).
        left_out: tensors only the fine-tune has (not in the base, so not in the adapter).
    """

    path: Path
    rank: int
    matrices: int
    full_tensors: int
    relative_error: float
    left_out: tuple[str, ...] = ()


def _is_embedding(module: str, listed: Collection[str]) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module in listed or "embed" in last or last in _EMBED_NAMES


def extract_lora(
    base: str | Path,
    finetuned: str | Path,
    out: str | Path,
    *,
    rank: int,
    embeddings: Collection[str] = (),
    lora_only: bool = False,
    overwrite: bool = False,
) -> LoraExtraction:
    """Write a PEFT LoRA adapter of rank ``rank`` for the task vector ``finetuned − base``.

    Args:
        base: the base model (folder or safetensors file).
        finetuned: a fine-tune of ``base`` with the same tensor names (extra ones are
            left out and reported).
        out: the adapter folder to create.
        rank: LoRA rank ``r`` >= 1.
        embeddings: module names to treat as embedding tables besides the name rule.
        lora_only: leave changed biases and other non-matrix tensors out.
        overwrite: replace an existing ``out``.

    Returns:
        A :class:`LoraExtraction` (counts and the relative approximation error).

    Raises:
        InputError: ``rank`` < 1, a GPT-2 style Conv1D model, shapes that differ, no
            changed tensor, or ``out`` exists without ``overwrite``.
    """
    if rank < 1:
        raise InputError(f"rank must be at least 1, got {rank}")
    if read_config(model_dir(base)).get("model_type") == "gpt2":
        raise InputError("extract-lora does not support GPT-2's Conv1D layers yet")
    check_output_path(out, overwrite=overwrite)
    rb, rf = open_model(base), open_model(finetuned)
    try:
        saved, cfg, stats = _extract(rb, rf, rank, set(embeddings), lora_only)
    finally:
        rb.close()
        rf.close()
    cfg["base_model_name_or_path"] = str(base)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        st.save_file(saved, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    left_out = tuple(n for n in rf.names() if n not in rb)
    if left_out:
        log.info("left out of the adapter (not in the base): %s", list(left_out))
    return LoraExtraction(Path(out), rank, *stats, left_out=left_out)


def _extract(
    rb: Any, rf: Any, rank: int, listed: set[str], lora_only: bool
) -> tuple[dict[str, Tensor], dict[str, Any], tuple[int, int, float]]:
    saved: dict[str, Tensor] = {}
    targets: dict[str, int] = {}
    biases: dict[str, Tensor] = {}
    whole: set[str] = set()
    err2 = norm2 = 0.0
    for name in rb.names():
        if name not in rf:
            continue
        tb, tf = rb.read(name).float(), rf.read(name).float()
        if tb.shape != tf.shape:
            raise InputError(
                f"{name!r} is {tuple(tf.shape)} in the fine-tune, {tuple(tb.shape)} in the base"
            )
        delta = tf - tb
        if not bool(delta.any()):
            continue
        module, _, param = name.rpartition(".")
        if tb.dim() == 2 and param == "weight" and min(tb.shape) > 1:
            emb = _is_embedding(module, listed)
            mat = delta.T if emb else delta  # PEFT's embedding delta is (B A)ᵀ
            k = min(rank, *mat.shape)
            a, b = lora_factors(mat, k)
            err2 += float((mat - b @ a).pow(2).sum())
            norm2 += float(mat.pow(2).sum())
            parts = (
                ("lora_embedding_A", "lora_embedding_B")
                if emb
                else ("lora_A.weight", "lora_B.weight")
            )
            saved[f"{PREFIX}{module}.{parts[0]}"] = a
            saved[f"{PREFIX}{module}.{parts[1]}"] = b
            targets[module] = k
        elif lora_only:
            continue
        elif param == "bias":
            biases[module] = tf
        else:
            whole.add(module)
    if not targets and not biases and not whole:
        raise InputError("the fine-tune does not differ from the base in any shared tensor")
    whole -= set(targets)
    full = 0
    for name in rb.names():  # modules_to_save carry every parameter of the module
        module, _, param = name.rpartition(".")
        if module in whole and name in rf:
            saved[f"{PREFIX}{name}"] = rf.read(name).float().to(rf.tensors[name].dtype)
            full += 1
    for module, t in biases.items():
        if module in whole:
            continue
        mid = ".base_layer" if module in targets else ""
        saved[f"{PREFIX}{module}{mid}.bias"] = t.to(rf.tensors[f"{module}.bias"].dtype)
        full += 1
    odd = {re.escape(m): k for m, k in targets.items() if k != rank}
    cfg = {
        "peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": sorted(targets),
        "rank_pattern": odd, "alpha_pattern": dict(odd), "bias": "all" if biases else "none",
        "modules_to_save": sorted(whole) or None, "fan_in_fan_out": False, "use_rslora": False,
        "use_dora": False, "lora_dropout": 0.0, "init_lora_weights": True, "inference_mode": True,
        "task_type": None, "layers_to_transform": None, "layers_pattern": None,
    }  # fmt: skip
    rel = math.sqrt(err2 / norm2) if norm2 > 0 else 0.0
    return saved, cfg, (len(targets), full, rel)
