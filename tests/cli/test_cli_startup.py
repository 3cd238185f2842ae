"""`modularevo --help` and the registry listings start without the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets")


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_imports_no_heavy_library():
    code = "from modularevo.cli.main import build_app\nbuild_app()"
    assert _imported_after(code) == set()


def test_the_model_registry_and_stage_schemas_load_light():
    code = (
        "from modularevo.models.defaults import MODELS\nMODELS.names()\n"
        "import modularevo.training.finetune_config, modularevo.training.pretrain_config\n"
        "import modularevo.cost.config, modularevo.emoe.config, modularevo.evolution.config"
    )
    assert _imported_after(code) == set()
