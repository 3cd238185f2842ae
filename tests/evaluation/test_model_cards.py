"""Model cards: Hub metadata that ModelCard reads back, results with n and intervals."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

from modularevo.evaluation.cards import write_model_card


def test_card_has_metadata_results_and_recipe(tmp_path: Path) -> None:
    path = write_model_card(
        tmp_path,
        title="minilm fine-tuned on lang-id",
        summary="Mask-guided fine-tuning inside a 25% module.",
        base_model="minilm",
        datasets=["lang-id"],
        results={"test": {"accuracy": 0.8, "n": 100}},
        command="modularevo finetune cfg.yaml",
        config={"model": "minilm", "lr": 5e-5},
    )
    card = ModelCard.load(path)
    assert card.data.base_model == "minilm"
    assert card.data.datasets == ["lang-id"]
    assert "modularevo" in card.data.tags
    assert "| test | 80.00 | 100 | [71.1, 86.7] |" in card.text
    assert "modularevo finetune cfg.yaml" in card.text
    assert "lr: 5.0e-05" in card.text
