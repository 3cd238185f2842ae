"""The loop end to end on tiny-bert: 2 rounds x 2 tasks, report, selection, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from evolve_helpers import fake_config, tiny_inputs

from modularevo.evolution import evolve
from modularevo.evolution.evaluate import LockedSplitError, TaskEvaluator
from modularevo.evolution.runner import JobRunner
from modularevo.evolution.state import RunDir

pytestmark = pytest.mark.slow

STRATEGIES = ["base", "single_task", "modularevo", "ft_task_arithmetic", "ft_ties"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run, with every evaluator read recorded."""
    reads: list[tuple[str, str, bool]] = []
    original = TaskEvaluator.score

    def spy(self: TaskEvaluator, task: str, state: Any, split: str) -> dict[str, float]:
        reads.append((task, split, self._test_locked))
        return original(self, task, state, split)

    mp = pytest.MonkeyPatch()
    mp.setattr(TaskEvaluator, "score", spy)
    try:
        data, texts = tiny_inputs()
        root = evolve(
            fake_config(tmp_path_factory.mktemp("run") / "evo"), datasets=data, texts=texts
        )
    finally:
        mp.undo()
    return {"root": root, "reads": reads}


def test_report_files_and_table_shape(straight_run: dict[str, Any]) -> None:
    root: Path = straight_run["root"]
    for name in ("report.md", "report.json", "rounds.png", "module_overlap.png"):
        assert (root / "report" / name).is_file(), name
    rep = json.loads((root / "report" / "report.json").read_text())
    rows = rep["table_test"]
    assert len(rows) == 1 + 2 * len(STRATEGIES)  # round 0 base + 2 rounds x strategies
    assert {(r["round"], r["strategy"]) for r in rows if r["round"] > 0} == {
        (r, s) for r in (1, 2) for s in STRATEGIES
    }
    for r in rows:
        assert 0 <= r["ta"] <= 1
        assert 0 <= r["tb"] <= 1
        assert r["abs_avg"] == pytest.approx(50 * (r["ta"] + r["tb"]))
        if r["strategy"] == "single_task":
            assert r["norm_avg"] == pytest.approx(100.0)
    merged = [r for r in rows if r["strategy"] in ("modularevo", "ft_ties")]
    assert all(r["search_evals"] >= 2 and len(r["lambdas"]) == 2 for r in merged)
    md = (root / "report" / "report.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| 2 |")]
    assert len(table) == len(STRATEGIES)  # the every-round table
    assert all(ln.count("|") == 10 for ln in table)  # 9 columns
    last = [ln for ln in md.splitlines() if ln.startswith("| ft_ties | ") and "[" in ln]
    assert len(last) == 1
    assert last[0].count("[") == 4  # ta, tb, abs avg, norm avg intervals
    assert (root / "final" / "modularevo" / "model" / "config.json").is_file()
    assert (root / "final" / "modularevo" / "heads" / "tb.safetensors").is_file()
    assert not list((root / "finetunes").glob("*/*/model"))  # cleaned up


def test_selection_never_reads_test(straight_run: dict[str, Any]) -> None:
    reads = straight_run["reads"]
    assert not [r for r in reads if r[1] == "test" and r[2]]
    assert all(locked for _, split, locked in reads if split == "search")
    assert any(split == "search" for _, split, _ in reads)
    assert any(split == "test" for _, split, _ in reads)  # reported after selection


def test_locked_evaluator_refuses_test(straight_run: dict[str, Any]) -> None:
    ev = TaskEvaluator({}, {})
    with ev.locked_test(), pytest.raises(LockedSplitError, match="test split"):
        ev.score("ta", {}, "test")


def test_resume_after_a_kill_matches_the_straight_run(
    straight_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "evo"
    writes = {"n": 0}
    original = RunDir.write_round

    def killing_write(self: RunDir, record: Any, state: Any) -> Path:
        if writes["n"] == 4:  # round 0 + 3 strategies of round 1 done, then "killed"
            raise KeyboardInterrupt
        writes["n"] += 1
        return original(self, record, state)

    monkeypatch.setattr(RunDir, "write_round", killing_write)
    data, texts = tiny_inputs()
    with pytest.raises(KeyboardInterrupt):
        evolve(fake_config(out), datasets=data, texts=texts)
    done = {p: p.stat().st_mtime_ns for p in (out / "rounds").glob("*/r*/record.json")}
    assert len(done) == 4
    monkeypatch.setattr(RunDir, "write_round", original)
    runs: list[str] = []
    original_call = JobRunner.__call__

    def counting(self: JobRunner, job: Any) -> None:
        if not (Path(job.out_dir) / "tuned.safetensors").is_file():
            runs.append(f"r{job.round}/{job.key}")
        original_call(self, job)

    monkeypatch.setattr(JobRunner, "__call__", counting)
    evolve(fake_config(out), datasets=data, texts=texts)
    assert not [r for r in runs if r.startswith("r1/")]  # round-1 fine-tunes were kept
    assert {p: p.stat().st_mtime_ns for p in done} == done  # completed steps untouched
    a = json.loads((out / "report" / "report.json").read_text())["table_test"]
    b = json.loads((straight_run["root"] / "report" / "report.json").read_text())["table_test"]
    assert [(r["round"], r["strategy"], r["ta"], r["tb"]) for r in a] == [
        (r["round"], r["strategy"], r["ta"], r["tb"]) for r in b
    ]


def test_another_config_in_the_same_folder_is_refused(straight_run: dict[str, Any]) -> None:
    from modularevo.errors import InputError

    data, texts = tiny_inputs()
    cfg = fake_config(straight_run["root"], rounds=3)
    with pytest.raises(InputError, match="another config"):
        evolve(cfg, datasets=data, texts=texts)


def test_display_keys_may_change_on_resume(tmp_path: Path) -> None:
    import yaml

    from modularevo.evolution.run_config import _same_run

    cfg = fake_config(tmp_path)
    saved = yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    assert _same_run(saved, cfg.model_copy(update={"progress": not cfg.progress}))
    assert not _same_run(saved, cfg.model_copy(update={"rounds": cfg.rounds + 1}))
    assert not _same_run(None, cfg)


def test_a_saved_config_without_newer_keys_still_resumes(tmp_path: Path) -> None:
    import yaml

    from modularevo.evolution.run_config import _same_run

    cfg = fake_config(tmp_path)
    saved = yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    del saved["finetune"]["task_type"]  # a key added after the run started (default value)
    assert _same_run(saved, cfg)
