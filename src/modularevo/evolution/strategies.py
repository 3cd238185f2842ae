"""The evolution strategies compared in one run, as a registry.

A strategy says how each task is fine-tuned in a round (inside its domain's module,
in full, or not at all), which registered merge method folds the fine-tuned models
back into the strategy's current model, and how a density maps onto the method's
parameters. Every merge uses one λ per task, as ModularEvo does (METHODS.md §1.3):

=====================  ==========  ==================  =======================
name                   fine-tune   merge method        density parameter
=====================  ==========  ==================  =======================
``base``               —           —                   —   (untouched backbone)
``single_task``        full        — (own lineage)     —   (upper bound per task)
``modularevo``         module      ``modularevo``      —   (the module's density)
``modularevo_random``  random mask ``modularevo``      —   (control: same density)
``ft_task_arithmetic`` full        ``task_arithmetic`` —
``ft_ties``            full        ``ties``            ``density`` (trim)
``ft_dare``            full        ``dare_linear``     ``density`` (keep prob.)
``ft_cabs``            full        ``cabs``            n:m with n = density·m
``ft_tsv_m``           full        ``tsv_m``           —
``ft_iso_c``           full        ``iso_c``           —
``ft_iso_cts``         full        ``iso_cts``         —
``ft_magmax``          full        ``magmax``          —
``ft_cart``            full        ``cart``            —   (rank_fraction 0.1)
``ft_pcb``             full        ``pcb``             ``density`` (kept share)
``ft_opcm``            full        ``opcm``            —   (tasks in config order)
=====================  ==========  ==================  =======================

``modularevo_random`` is the control of the learned module: every domain module is
replaced by a random mask with the same number of kept entries in every parameter
(:func:`modularevo.modules.analysis.random_twin`), used both to fine-tune and to merge.
CABS needs K·n ≤ m for K tasks (else later tasks get empty masks): densities that
break it are refused by the config and skipped by the search.

TIES runs with ``normalize: false`` so that λ_t means "scale of task t" in every
method (θ = θ₀ + Σ_t λ_t τ'_t over sign-agreeing entries).

A run config can add **variants** of these strategies (``variants:`` in
:class:`~modularevo.evolution.config.EvolveConfig`): a registered strategy with other
fixed merge parameters, another λ grid, another fine-tuning learning rate or another
module density, run beside the others so that every comparison is paired
(:meth:`Strategy.variant`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from modularevo.registry import Registry

TrainKind = Literal["module", "full"]


@dataclass(frozen=True)
class Strategy:
    """One evolution strategy.

    Attributes:
        name: registry key (also the YAML name).
        summary: one line for reports and ``--help``.
        train: how tasks fine-tune each round, or ``None`` (no training).
        merge_method: name in ``MERGE_METHODS``, or ``None`` (no merge).
        density: how a density reaches the method: ``none``, ``density`` or ``nm``.
        fixed: method parameters that never change.
        random_mask: fine-tune and merge with each module's random twin (a control).
        parent: for a variant, the registered strategy it changes (else ``None``).
        lr: fine-tuning learning rate of a variant (``None``: the run's).
        module_density: module snapshot level of a variant (``None``: the run's).
        search: λ-search options of a variant (keys of ``SearchOptions``; empty: the run's).
    """

    name: str
    summary: str
    train: TrainKind | None
    merge_method: str | None
    density: Literal["none", "density", "nm"] = "none"
    fixed: dict[str, Any] = field(default_factory=dict)
    random_mask: bool = False
    parent: str | None = None
    lr: float | None = None
    module_density: float | None = None
    search: dict[str, Any] = field(default_factory=dict)

    @property
    def trains_own(self) -> bool:
        """Whether a variant fine-tunes differently from its parent (own fine-tune jobs)."""
        return self.lr is not None or self.module_density is not None

    def variant(
        self,
        name: str,
        *,
        merge: dict[str, Any] | None = None,
        lr: float | None = None,
        module_density: float | None = None,
        search: dict[str, Any] | None = None,
    ) -> Strategy:
        """This strategy with other settings, called ``name``.

        Args:
            name: the variant's name (must not be a registered strategy).
            merge: fixed merge parameters added to (or replacing) this strategy's.
            lr: fine-tuning learning rate (inside the module for module strategies).
            module_density: module snapshot level (module strategies only).
            search: λ-search options that replace the run's (e.g. ``{"lambdas": [1.0],
                "refine_passes": 0}``: λ = 1 for every task, no search).

        Raises:
            ValueError: a setting this strategy cannot use.
        """
        if name in STRATEGIES:
            raise ValueError(f"variant name {name!r} is a registered strategy; choose another")
        if self.train is None:
            raise ValueError(f"{self.name!r} trains nothing, so it has no variants")
        if merge and self.merge_method is None:
            raise ValueError(f"{self.name!r} does not merge, so `merge` does not apply")
        if search and self.merge_method is None:
            raise ValueError(f"{self.name!r} does not merge, so `search` does not apply")
        if module_density is not None and self.train != "module":
            raise ValueError(f"{self.name!r} fine-tunes in full: module_density does not apply")
        if merge:
            self._check_merge_params(merge)
        return replace(
            self,
            name=name,
            summary=_variant_summary(self.name, merge, lr, module_density, search),
            fixed={**self.fixed, **(merge or {})},
            parent=self.name,
            lr=lr,
            module_density=module_density,
            search=dict(search or {}),
        )

    def _check_merge_params(self, merge: dict[str, Any]) -> None:
        """Refuse, before any training, merge parameters the method does not take or that
        the evolution sets itself (λ per task, the searched density)."""
        # deferred: the merge registry loads only when a variant changes merge parameters
        from modularevo.merging import MERGE_METHODS

        assert self.merge_method is not None
        spec = MERGE_METHODS.get(self.merge_method)
        searched = {"weight", "density", "n", "m"} & set(merge)
        if searched:
            raise ValueError(
                f"merge.{sorted(searched)[0]} is set by the evolution's search for every merge; "
                "change it through the variant's `search` (lambdas, densities) instead"
            )
        for key, value in merge.items():
            try:
                problem = spec.param(key).check(value)
            except KeyError:
                known = sorted(p.name for p in spec.params if p.name not in ("weight", "density"))
                raise ValueError(
                    f"merge.{key}: {self.merge_method} has no parameter {key!r}; known: {known}"
                ) from None
            if problem is not None:
                raise ValueError(f"merge.{key} of {self.merge_method}: {problem}")

    @property
    def merges(self) -> bool:
        """Whether the strategy merges fine-tuned models each round."""
        return self.merge_method is not None

    def method_params(
        self, lambdas: Sequence[float], density: float | None, *, cabs_block: int = 8
    ) -> dict[str, Any]:
        """The merge method's parameters for per-task ``lambdas`` and a ``density``.

        Raises:
            ValueError: the strategy does not merge, or n:m with K tasks has K·n > m.
        """
        if self.merge_method is None:
            raise ValueError(f"strategy {self.name!r} does not merge")
        params: dict[str, Any] = {"weight": [float(x) for x in lambdas], **self.fixed}
        if self.density == "density" and density is not None:
            params["density"] = float(density)
        elif self.density == "nm":
            k = len(lambdas)
            n = cabs_n(density, cabs_block) if density is not None else cabs_block // max(4, k)
            check_cabs(k, max(1, n), cabs_block)
            params.update(m=cabs_block, n=max(1, n))
        return params

    def usable_densities(
        self, densities: Sequence[float], num_tasks: int, *, cabs_block: int = 8
    ) -> list[float]:
        """The densities of a grid this strategy can use with ``num_tasks`` tasks."""
        if self.density != "nm":
            return list(densities)
        return [d for d in densities if num_tasks * cabs_n(d, cabs_block) <= cabs_block]


def _variant_summary(parent: str, merge: Any, lr: Any, density: Any, search: Any) -> str:
    parts = [f"{k}={v}" for k, v in (merge or {}).items()]
    if lr is not None:
        parts.append(f"lr={lr:g}")
    if density is not None:
        parts.append(f"module density {density:g}")
    parts += [f"search.{k}={v}" for k, v in (search or {}).items()]
    return f"variant of {parent}: " + ", ".join(parts or ["as its parent"])


def cabs_n(density: float, m: int) -> int:
    """n of CABS n:m for a density: ``round(density·m)`` within [1, m]."""
    return max(1, min(m, round(density * m)))


def check_cabs(k: int, n: int, m: int) -> None:
    """Refuse n:m with K·n > m for K tasks (the later tasks would keep nothing).

    Raises:
        ValueError: naming K, n and m.
    """
    if k * n > m:
        raise ValueError(
            f"cabs with K={k} tasks and n:m = {n}:{m} needs K*n <= m, but K*n = {k * n} > {m}: "
            f"tasks after the first {m // n} would get empty masks; use n <= {m // k} "
            f"(density <= {1 / k:.3g}) or a larger block m"
        )


STRATEGIES: Registry[Strategy] = Registry("evolution strategy")

for _s in (
    Strategy("base", "the untouched pretrained backbone (linear-probe heads)", None, None),
    Strategy(
        "single_task", "each task fine-tunes its own copy in full (upper bound)", "full", None
    ),
    Strategy(
        "modularevo",
        "fine-tune inside the domain module, module-aware task arithmetic",
        "module",
        "modularevo",
        fixed={"overlap": "sum"},
    ),
    Strategy(
        "modularevo_random",
        "control: as modularevo, with a random mask of each module's per-layer density",
        "module",
        "modularevo",
        fixed={"overlap": "sum"},
        random_mask=True,
    ),
    Strategy("ft_task_arithmetic", "full fine-tuning + task arithmetic", "full", "task_arithmetic"),
    Strategy(
        "ft_ties",
        "full fine-tuning + TIES",
        "full",
        "ties",
        "density",
        {"normalize": False},
    ),
    Strategy(
        "ft_dare",
        "full fine-tuning + DARE (drop, rescale by 1/p as the paper, sum)",
        "full",
        "dare_linear",
        "density",
        {"rescale": "inverse_p"},
    ),
    Strategy("ft_cabs", "full fine-tuning + CABS (n:m, disjoint)", "full", "cabs", "nm"),
    Strategy("ft_tsv_m", "full fine-tuning + TSV-M (task singular vectors)", "full", "tsv_m"),
    Strategy("ft_iso_c", "full fine-tuning + Iso-C (flat spectrum of the sum)", "full", "iso_c"),
    Strategy(
        "ft_iso_cts", "full fine-tuning + Iso-CTS (common + task subspaces)", "full", "iso_cts"
    ),
    Strategy("ft_magmax", "full fine-tuning + MagMax (largest-magnitude entry)", "full", "magmax"),
    Strategy("ft_cart", "full fine-tuning + CART (average + low-rank centred)", "full", "cart"),
    Strategy(
        "ft_pcb",
        "full fine-tuning + PCB (parameter competition balancing)",
        "full",
        "pcb",
        "density",
    ),
    Strategy(
        "ft_opcm", "full fine-tuning + OPCM (continual orthogonal projection)", "full", "opcm"
    ),
):
    STRATEGIES.add(_s.name, _s)


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name`` (did-you-mean error when unknown)."""
    return STRATEGIES.get(name)
