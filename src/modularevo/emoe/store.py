"""Save and load EMoE models as plain Hugging Face folders plus ``emoe.json``.

Layout of a saved folder::

    config.json, model.safetensors, tokenizer files   # a normal, dense HF model
    emoe.json           # experts, top_k, layers, per-layer settings, kind, config
    emoe.safetensors    # layer.<i>.gates (E, d) fp32 and layer.<i>.perm (d_ff,) int64

Neuron permutation does not change the dense function, so ``transformers`` loads
the folder as the dense model; :func:`load_emoe` loads it and re-wraps the EMoE
layers with the saved gates (arXiv 2310.10908).

Example:
    >>> save_emoe(model, "runs/minilm-emoe", tokenizer=tok)  # doctest: +SKIP
    >>> model, tok = load_emoe("runs/minilm-emoe")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modularevo.emoe.config import as_config
from modularevo.emoe.convert import PAPER, emoe_convert, emoe_layers, find_ffn_sites, wrap_ffn
from modularevo.errors import InputError
from modularevo.models.defaults import MODELS
from modularevo.models.heads import SequenceClassifier
from modularevo.models.load import is_saved_classifier, load_model, resolve_model
from modularevo.utils.atomic import atomic_dir, atomic_save_file, atomic_write_text
from modularevo.utils.runinfo import package_versions

META_FILE = "emoe.json"
TENSOR_FILE = "emoe.safetensors"
FORMAT_VERSION = 1


def emoe_summary(model: nn.Module) -> dict[str, Any]:
    """The ``emoe.json`` content of a converted model (no tensors).

    Raises:
        InputError: if ``model`` has no EMoE layer.
    """
    layers = emoe_layers(model)
    if not layers:
        raise InputError(
            f"{type(model).__name__} has no EMoE layer; convert it first with emoe_convert"
        )
    per_layer = {
        str(i): {
            "experts": layer.n_experts,
            "top_k": layer.top_k,
            "expert_size": layer.expert_size,
            "refresh_gates": layer.refresh,
            "cluster_sizes": layer.cluster_sizes,
        }
        for i, layer in layers.items()
    }
    first = next(iter(layers.values()))
    return {
        "method": "emoe",
        "paper": PAPER,
        "format_version": FORMAT_VERSION,
        "experts": first.n_experts,
        "top_k": first.top_k,
        "layers": sorted(layers),
        "kind": model_kind(model),
        "per_layer": per_layer,
    }


def model_kind(model: nn.Module) -> str:
    """``"classifier"`` for a modularevo SequenceClassifier, else ``"hf"`` (native class)."""
    return "classifier" if isinstance(model, SequenceClassifier) else "hf"


def save_emoe(
    model: nn.Module, out: str | Path, *, tokenizer: Any = None, overwrite: bool = False
) -> Path:
    """Write ``model`` as a dense HF folder plus ``emoe.json`` and the gates, atomically.

    Args:
        model: a model converted by :func:`~modularevo.emoe.convert.emoe_convert`.
        out: output folder.
        tokenizer: saved beside the model when given.
        overwrite: replace an existing folder.

    Returns:
        The folder written.

    Raises:
        InputError: if ``model`` has no EMoE layer or ``out`` exists without ``overwrite``.
    """
    meta = emoe_summary(model)
    meta["versions"] = package_versions()
    tensors: dict[str, Tensor] = {}
    for i, layer in emoe_layers(model).items():
        tensors[f"layer.{i}.gates"] = layer.gates.detach().cpu().contiguous()  # type: ignore[union-attr]
        perm = layer.perm
        if isinstance(perm, Tensor):
            tensors[f"layer.{i}.perm"] = perm.cpu().contiguous()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)  # type: ignore[operator]
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_save_file(tensors, tmp / TENSOR_FILE)
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2) + "\n")
    return Path(out)


def read_emoe_meta(folder: str | Path) -> dict[str, Any]:
    """The parsed ``emoe.json`` of a saved EMoE folder.

    Raises:
        InputError: if the folder or file is missing, or the format is newer than this code.
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise InputError(
            f"{str(folder)!r} is not an EMoE folder: no {META_FILE} found; write one with "
            "`modularevo emoe convert MODEL OUT` or save_emoe(model, OUT)"
        )
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{path} has format_version {meta.get('format_version')}, newer than this "
            f"modularevo reads ({FORMAT_VERSION}); upgrade modularevo"
        )
    return meta


def attach_emoe(model: nn.Module, folder: str | Path) -> nn.Module:
    """Re-wrap the FFN layers listed in ``folder``'s ``emoe.json`` with the saved gates.

    ``model`` must hold the folder's (permuted) dense weights, e.g. loaded from it.

    Returns:
        The same model object with EMoE layers.

    Raises:
        InputError: if a saved layer does not exist in ``model`` or shapes do not match.
    """
    from safetensors.torch import load_file

    meta = read_emoe_meta(folder)
    tensors = load_file(str(Path(folder) / TENSOR_FILE))
    sites = find_ffn_sites(model)
    for key, info in meta["per_layer"].items():
        index = int(key)
        if index >= len(sites):
            raise InputError(
                f"{folder}: EMoE layer {index} is saved but the model has only {len(sites)} "
                "FFN layers; load the model this folder was saved from"
            )
        layer = wrap_ffn(
            model, sites[index], gates=tensors[f"layer.{index}.gates"],
            top_k=int(info["top_k"]), refresh=bool(info["refresh_gates"]),
        )  # fmt: skip
        if f"layer.{index}.perm" in tensors:
            layer.perm = tensors[f"layer.{index}.perm"]
        layer.cluster_sizes = info.get("cluster_sizes")
    return model


def load_emoe(folder: str | Path, *, kind: str | None = None) -> tuple[nn.Module, Any]:
    """Load a folder written by :func:`save_emoe` with its EMoE layers.

    Args:
        folder: the saved folder.
        kind: how to load the dense model; default the saved ``kind`` (``"hf"``: the class
            in ``config.json``'s ``architectures``; ``"classifier"``: modularevo's
            SequenceClassifier), or any :func:`modularevo.models.load_model` kind.

    Returns:
        (model in eval mode, tokenizer or None).

    Raises:
        InputError: if the folder is not an EMoE folder or cannot be loaded.
    """
    meta = read_emoe_meta(folder)
    kind = str(kind or meta.get("kind", "hf"))
    if kind == "hf":
        model, tok = _load_native(Path(folder))
    else:
        model, tok = load_model(str(folder), kind)
    return attach_emoe(model, folder).eval(), tok


def _load_native(folder: Path) -> tuple[nn.Module, Any]:
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    arch = (getattr(config, "architectures", None) or ["AutoModel"])[0]
    cls = getattr(transformers, arch, None)
    if cls is None:
        raise InputError(
            f"{folder}: config.json names architecture {arch!r}, which this transformers "
            f"({transformers.__version__}) does not have; pass kind='encoder' or 'causal_lm'"
        )
    model = cls.from_pretrained(folder)
    tok = None
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tok = transformers.AutoTokenizer.from_pretrained(folder)
    return model, tok


def convert_pretrained(
    source: str,
    out: str | Path,
    cfg: Any = None,
    *,
    kind: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Load a model, convert it to EMoE and save it: what ``modularevo emoe convert`` does.

    Args:
        source: an embedded model name (``minilm``, ``tiny-bert`` ...), or an HF folder.
        out: output folder (written atomically).
        cfg: an :class:`~modularevo.emoe.config.EMoEConfig` or a dict of its fields.
        kind: how to load ``source``; default the embedded model's kind, ``classifier``
            for a saved modularevo classifier, else the class named in ``config.json``.
        overwrite: replace an existing output folder.

    Returns:
        The ``emoe.json`` content, plus ``seconds`` spent converting.

    Raises:
        InputError, ConfigError: for a bad model, folder or setting.
    """
    import time

    config = as_config(cfg)  # validate before loading anything
    model, tok = _load_source(source, kind)
    start = time.perf_counter()
    emoe_convert(model, config)
    seconds = time.perf_counter() - start
    save_emoe(model, out, tokenizer=tok, overwrite=overwrite)
    meta = read_emoe_meta(out)
    meta["seconds"] = seconds
    return meta


def _load_source(source: str, kind: str | None) -> tuple[nn.Module, Any]:
    if kind is None and source in MODELS:
        kind = MODELS.get(source).kind
    if kind is None and Path(source).is_dir() and is_saved_classifier(source):
        kind = "classifier"
    if kind is None or kind == "hf":
        return _load_native(Path(resolve_model(source)))
    return load_model(source, kind)
