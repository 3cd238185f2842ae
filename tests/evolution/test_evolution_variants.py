"""Variants: a registered strategy with other settings, run beside the others and judged
by the rules written for them; a finished run extended with more strategies; a moved run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from evolve_helpers import fake_config, tiny_inputs
from pydantic import ValidationError

from modularevo.evolution import evolve
from modularevo.evolution.run_config import _same_run
from modularevo.evolution.state import RunDir
from modularevo.evolution.verdicts import verdicts

VARIANTS = {
    "me_mean": {"of": "modularevo", "merge": {"overlap": "mean"}},
    "me_lambda1": {"of": "modularevo", "search": {"lambdas": [1.0], "refine_passes": 0}},
    "me_lr": {"of": "modularevo", "lr": 5e-4},
    "me_d50": {"of": "modularevo", "module_density": 0.5},
}


def test_a_variant_resolves_to_its_parent_with_its_settings(tmp_path: Path) -> None:
    cfg = fake_config(tmp_path, variants=VARIANTS, strategies=["base", "modularevo", *VARIANTS])
    mean = cfg.strategy("me_mean")
    assert (mean.parent, mean.train, mean.merge_method) == ("modularevo", "module", "modularevo")
    assert mean.fixed["overlap"] == "mean"
    assert not mean.trains_own
    assert cfg.strategy("modularevo").fixed["overlap"] == "sum"  # the parent is untouched
    one = cfg.strategy("me_lambda1")
    o = cfg.search_for(one)
    assert (o.lambdas, o.refine_passes, o.densities) == ((1.0,), 0, cfg.search.densities)
    assert cfg.search_for(cfg.strategy("modularevo")) == cfg.search
    assert cfg.strategy("me_lr").lr == 5e-4
    assert cfg.strategy("me_lr").trains_own
    assert cfg.strategy("me_d50").module_density == 0.5
    assert "overlap=mean" in mean.summary


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"ft_ties": {"of": "modularevo"}}, "is a registered strategy"),
        ({"v": {"of": "modularevoo"}}, "not a registered strategy"),
        ({"v": {"of": "ft_ties", "module_density": 0.5}}, "module_density does not apply"),
        ({"v": {"of": "base", "lr": 1e-4}}, "trains nothing"),
        ({"v": {"of": "single_task", "merge": {"x": 1}}}, "does not merge"),
        ({"v": {"of": "modularevo", "search": {"lambda": [1.0]}}}, "lambda"),
        ({"v": {"of": "modularevo", "lr": -1}}, "greater than 0"),
        ({"v": {"of": "modularevo", "merge": {"overlapp": "mean"}}}, "no parameter 'overlapp'"),
        ({"v": {"of": "modularevo", "merge": {"overlap": "max"}}}, "must be one of"),
        ({"v": {"of": "ft_ties", "merge": {"weight": 2.0}}}, "set by the evolution's search"),
    ],
)
def test_bad_variants_are_refused_with_one_clear_message(
    tmp_path: Path, variants: dict[str, Any], message: str
) -> None:
    names = [n for n in variants if n != "ft_ties"]
    with pytest.raises(ValidationError, match=message):
        fake_config(tmp_path, variants=variants, strategies=["base", "ft_ties", *names])


def test_an_unlisted_variant_name_in_strategies_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown strategies.*me_mean"):
        fake_config(tmp_path, strategies=["base", "me_mean"])


def test_a_run_may_be_extended_and_moved_but_not_changed(tmp_path: Path) -> None:
    cfg = fake_config(tmp_path / "a")
    saved = yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    more = fake_config(
        tmp_path / "b",
        variants={"me_mean": VARIANTS["me_mean"]},
        strategies=[*cfg.strategies, "me_mean", "ft_dare"],
    )
    assert _same_run(saved, more)  # added strategies and variants, and another folder
    fewer = fake_config(tmp_path / "a", strategies=cfg.strategies[:-1])
    assert not _same_run(saved, fewer)
    saved_more = yaml.safe_load(yaml.safe_dump(more.model_dump(mode="json")))
    changed = fake_config(
        tmp_path / "b",
        variants={"me_mean": {"of": "modularevo", "merge": {"overlap": "sum"}}},
        strategies=more.strategies,
    )
    assert not _same_run(saved_more, changed)  # a variant's definition may not change


def _pair(a: str, b: str, diff: float, lo: float, hi: float, p_holm: float) -> dict[str, Any]:
    d = {"diff": diff, "lo": lo, "hi": hi, "p": p_holm, "p_holm": p_holm}
    return {"round": 1, "a": a, "b": b, "mcnemar": {}, "abs_avg": d}


def test_variant_verdicts_need_the_interval_and_holm() -> None:
    stats = {
        "pairs": [
            _pair("modularevo", "ft_ties", -1.0, -2.0, -0.1, 0.01),
            _pair("v_good", "ft_ties", 2.0, 0.5, 3.5, 0.01),
            _pair("v_good", "modularevo", 3.0, 1.0, 5.0, 0.001),
            _pair("v_weak", "ft_ties", 1.0, 0.1, 1.9, 0.20),  # interval excludes 0, Holm does not
            _pair("modularevo", "v_weak", -2.0, -3.0, -1.0, 0.01),  # stored the other way round
        ]
    }
    val_rows = [
        {"round": 1, "strategy": "ft_ties", "abs_avg": 80.0},
        {"round": 1, "strategy": "ft_dare", "abs_avg": 79.0},
        {"round": 1, "strategy": "ft_v", "abs_avg": 99.0},  # a variant is never the baseline
    ]
    v = verdicts(
        stats, val_rows, {"v_good": "modularevo", "v_weak": "modularevo", "ft_v": "ft_ties"}
    )
    assert v["best_baseline_on_validation"] == "ft_ties"
    assert v["modularevo_vs_best_baseline"]["verdict"].startswith("no")
    good, weak = v["variants"]["v_good"], v["variants"]["v_weak"]
    assert good["vs_best_baseline"]["verdict"] == "yes"
    assert good["vs_parent"]["verdict"] == "yes"
    assert weak["vs_best_baseline"]["verdict"] == "undecided"
    assert weak["vs_parent"]["verdict"] == "yes"
    assert weak["vs_parent"]["diff"] == 2.0


@pytest.mark.slow
def test_variants_run_paired_share_or_own_their_fine_tunes_and_extend_a_run(
    tmp_path: Path,
) -> None:
    data, texts = tiny_inputs()
    first = fake_config(tmp_path / "evo", rounds=1, strategies=["base", "modularevo"], plots=False)
    root = evolve(first, datasets=data, texts=texts)
    record = root / "rounds" / "modularevo" / "r1" / "record.json"
    before = record.read_text()
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    more = fake_config(
        moved,
        rounds=1,
        strategies=["base", "modularevo", *VARIANTS],
        variants=VARIANTS,
        plots=False,
    )
    root = evolve(more, datasets=data, texts=texts)
    assert (moved / "rounds" / "modularevo" / "r1" / "record.json").read_text() == before
    run = RunDir(root)
    keys = {p.name for p in (root / "finetunes" / "r1").iterdir()}
    # the merge-only variants share modularevo's fine-tunes; lr and density have their own
    assert keys == {
        f"base-{t}-{k}" for t in ("ta", "tb") for k in ("module", "module-me_lr", "module-me_d50")
    }

    def job_config(key: str) -> dict[str, Any]:
        return yaml.safe_load(
            (root / "finetunes" / "r1" / key / "config.resolved.yaml").read_text()
        )

    assert job_config("base-ta-module-me_lr")["lr"] == 5e-4
    assert job_config("base-ta-module")["lr"] == more.finetune.lr
    assert job_config("base-ta-module-me_d50")["module"].endswith("module-0.5.safetensors")
    assert run.read_record("me_lambda1", 1).search["lambdas"] == [1.0, 1.0]
    assert run.read_record("me_lambda1", 1).search["evaluations"] == 1
    mean, summ = run.read_record("me_mean", 1), run.read_record("modularevo", 1)
    assert mean.scores["ta"]["test"]["n"] == summ.scores["ta"]["test"]["n"]
    report = json.loads((root / "report" / "report.json").read_text())
    assert set(report["verdicts"]["variants"]) == set(VARIANTS)
    assert all("vs_parent" in v for v in report["verdicts"]["variants"].values())
    md = (root / "report" / "report.md").read_text()
    assert "variant me_mean beats modularevo" in md
