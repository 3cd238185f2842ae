"""One naming of weights: masks of one form of a model fit its other forms."""

from __future__ import annotations

from modularevo.modules.naming import match_names

MLM = [
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.1.output.dense.weight",
]
BARE = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.1.output.dense.weight"]


def test_same_names_map_to_themselves():
    assert match_names(BARE, [*BARE, "pooler.dense.weight"]) == dict(zip(BARE, BARE, strict=True))


def test_a_prefix_is_dropped_added_or_swapped():
    assert match_names(MLM, BARE) == dict(zip(MLM, BARE, strict=True))
    wrapped = [f"backbone.{n}" for n in BARE]
    assert match_names(MLM, wrapped) == dict(zip(MLM, wrapped, strict=True))
    assert match_names(wrapped, MLM) == dict(zip(wrapped, MLM, strict=True))


def test_masks_of_another_architecture_map_to_nothing():
    assert match_names(MLM, ["transformer.h.0.attn.q_proj.weight", "lm_head.weight"]) == {}


def test_a_mask_of_a_tensor_the_model_lacks_is_left_out():
    head = "cls.predictions.transform.dense.weight"
    assert match_names([*MLM, head], BARE) == dict(zip(MLM, BARE, strict=True))
