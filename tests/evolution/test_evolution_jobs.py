"""Job splitting, worker count, the sequential path and round-1 job sharing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from modularevo.evolution.jobs import FinetuneJob, resolve_workers, run_jobs, split_jobs
from modularevo.evolution.loop import plan_jobs
from modularevo.evolution.state import RunDir


def test_split_jobs_round_robin_keeps_order_and_never_leaves_empty_buckets() -> None:
    assert split_jobs(list("abcde"), 2) == [["a", "c", "e"], ["b", "d"]]
    assert split_jobs(list("ab"), 4) == [["a"], ["b"]]
    assert split_jobs([], 3) == []
    buckets = split_jobs(list(range(10)), 3)
    assert sorted(x for b in buckets for x in b) == list(range(10))
    assert max(map(len, buckets)) - min(map(len, buckets)) <= 1


def test_resolve_workers() -> None:
    assert resolve_workers(3) == 3
    assert resolve_workers("auto", num_gpus=0) == 1
    assert resolve_workers("auto", num_gpus=1) == 1
    assert resolve_workers("auto", num_gpus=4) == 4


def _job(key: str) -> FinetuneJob:
    return FinetuneJob(key, 1, "t", "full", "s", None, "o")


def test_sequential_path_runs_every_job_in_order_in_process() -> None:
    seen: list[str] = []
    jobs = [_job("a"), _job("b"), _job("c")]
    run_jobs(jobs, lambda j: seen.append(j.key), workers=1, config_json={"x": 1})
    assert seen == ["a", "b", "c"]
    seen.clear()
    run_jobs(jobs, lambda j: seen.append(j.key), workers=4, config_json=None)  # no config
    assert seen == ["a", "b", "c"]


def test_round_one_full_finetunes_are_shared_later_rounds_are_not(tmp_path: Path) -> None:
    from modularevo.evolution.strategies import get_strategy

    cfg = SimpleNamespace(tasks=["t1", "t2"], strategy=get_strategy)
    sets = {(None, False): {"t1": "m1", "t2": "m2"}}
    ctx = SimpleNamespace(
        cfg=cfg, run=RunDir(tmp_path), modules=sets[None, False], module_sets=sets
    )
    names = ["base", "single_task", "modularevo", "ft_task_arithmetic", "ft_ties"]
    r1 = plan_jobs(ctx, 1, names)  # type: ignore[arg-type]
    assert {j.key for j in r1.values()} == {
        "base-t1-full", "base-t2-full", "base-t1-module", "base-t2-module"
    }  # fmt: skip
    assert r1[("ft_ties", "t1")] is r1[("single_task", "t1")]
    assert r1[("modularevo", "t2")].module == "m2"
    assert r1[("ft_ties", "t1")].module is None
    r2 = plan_jobs(ctx, 2, names)  # type: ignore[arg-type]
    assert len({j.key for j in r2.values()}) == 8  # 4 lineages x 2 tasks
    assert r2[("ft_ties", "t1")].start_state.endswith("rounds/ft_ties/r1/state.safetensors")


def test_every_strategy_fine_tunes_a_task_on_the_same_data_order(tmp_path: Path) -> None:
    from modularevo.evolution.config import EvolveConfig
    from modularevo.evolution.runner import JobRunner

    cfg = EvolveConfig.model_validate(
        {"tasks": ["a", "b"], "rounds": 2, "output_dir": str(tmp_path)}
    )
    runner = JobRunner(cfg, workspace=object())  # type: ignore[arg-type]

    def job(key: str, task: str, kind: str, rnd: int = 1) -> FinetuneJob:
        module = "m.safetensors" if kind == "module" else None
        return FinetuneJob(key, rnd, task, kind, "s", module, str(tmp_path / key))

    full = runner.finetune_config(job("base-a-full", "a", "full"))
    module = runner.finetune_config(job("base-a-module", "a", "module"))
    merged = runner.finetune_config(job("ft_ties-a-full", "a", "full"))
    assert full.seed == module.seed == merged.seed  # same (seed, task, round): same batches
    assert full.train_shard == module.train_shard
    assert runner.finetune_config(job("base-b-full", "b", "full")).seed != full.seed
    assert runner.finetune_config(job("x", "a", "full", rnd=2)).seed != full.seed
