"""EMoE: Emergent Mixture-of-Experts from the FFNs of a pre-trained model.

Qiu, Huang & Fu, "Unlocking Emergent Modularity in Large Language Models",
NAACL 2024, https://arxiv.org/abs/2310.10908. Dense FFN neurons are clustered into
equal-size experts by their keys; each token uses its top-k experts chosen by avg-k
gates (the mean key of each expert). No parameters are added.

Example:
    >>> from modularevo.models import load_model
    >>> from modularevo.emoe import emoe_convert, save_emoe, load_emoe
    >>> model, tok = load_model("minilm", "encoder")  # doctest: +SKIP
    >>> emoe_convert(model, experts=16, top_k=4, layers="last2")  # doctest: +SKIP
    >>> save_emoe(model, "runs/minilm-emoe", tokenizer=tok)  # doctest: +SKIP
    >>> model, tok = load_emoe("runs/minilm-emoe")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modularevo.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from modularevo.emoe.config import EMoEConfig, as_config, resolve_layers
    from modularevo.emoe.convert import (
        FFNSite,
        emoe_convert,
        emoe_layers,
        emoe_to_dense,
        find_ffn_sites,
        permute_ffn_,
        refresh_gates,
    )
    from modularevo.emoe.layer import EMoEFFN, FFNLayout, ffn_keys
    from modularevo.emoe.report import EMoEReport, LayerReport, inspect_emoe
    from modularevo.emoe.split import (
        avg_k_gates,
        balanced_kmeans,
        cluster_sizes,
        expert_mask,
        expert_permutation,
        invert_permutation,
        normalize_rows,
    )
    from modularevo.emoe.store import (
        attach_emoe,
        convert_pretrained,
        load_emoe,
        read_emoe_meta,
        save_emoe,
    )

_EXPORTS = {
    "EMoEConfig": "config",
    "as_config": "config",
    "resolve_layers": "config",
    "FFNSite": "convert",
    "emoe_convert": "convert",
    "emoe_layers": "convert",
    "emoe_to_dense": "convert",
    "find_ffn_sites": "convert",
    "permute_ffn_": "convert",
    "refresh_gates": "convert",
    "EMoEFFN": "layer",
    "FFNLayout": "layer",
    "ffn_keys": "layer",
    "EMoEReport": "report",
    "LayerReport": "report",
    "inspect_emoe": "report",
    "avg_k_gates": "split",
    "balanced_kmeans": "split",
    "cluster_sizes": "split",
    "expert_mask": "split",
    "expert_permutation": "split",
    "invert_permutation": "split",
    "normalize_rows": "split",
    "attach_emoe": "store",
    "convert_pretrained": "store",
    "load_emoe": "store",
    "read_emoe_meta": "store",
    "save_emoe": "store",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "EMoEConfig",
    "EMoEFFN",
    "EMoEReport",
    "FFNLayout",
    "FFNSite",
    "LayerReport",
    "as_config",
    "attach_emoe",
    "avg_k_gates",
    "balanced_kmeans",
    "cluster_sizes",
    "convert_pretrained",
    "emoe_convert",
    "emoe_layers",
    "emoe_to_dense",
    "expert_mask",
    "expert_permutation",
    "ffn_keys",
    "find_ffn_sites",
    "inspect_emoe",
    "invert_permutation",
    "load_emoe",
    "normalize_rows",
    "permute_ffn_",
    "read_emoe_meta",
    "refresh_gates",
    "resolve_layers",
    "save_emoe",
]
