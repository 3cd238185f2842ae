"""Open the merge's input models (headers only) and name their tensors as the base does.

:func:`open_input` opens a safetensors model folder; a folder holding only ``.bin``
weights is re-saved as safetensors, and a PEFT LoRA adapter is applied to its base,
both in a scratch folder the plan removes when closed. :func:`align_names` renames a
fine-tune's tensors to the reference model's naming of the same weights.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from modularevo.errors import InputError
from modularevo.io.reader import ModelReader, open_model
from modularevo.io.torch_bin import bin_files, convert_bin
from modularevo.merging.lora import adapter_base, is_lora_adapter, materialise_adapter

log = logging.getLogger(__name__)


def open_input(
    path: str, errors: list[str], scratch: list[Path], base: str | None = None
) -> ModelReader | None:
    """Open a model; one holding only ``.bin`` weights is first re-saved as safetensors
    into a scratch folder (:mod:`modularevo.io.torch_bin`), and a PEFT LoRA adapter is
    applied to ``base`` there (:mod:`modularevo.merging.lora`); ``plan.close()`` removes it."""
    if is_lora_adapter(path):
        tmp = Path(tempfile.mkdtemp(prefix="modularevo-lora-"))
        scratch.append(tmp)
        log.info("%s is a LoRA adapter: applying it to its base in %s", path, tmp)
        try:
            return open_model(materialise_adapter(path, adapter_base(path, base), tmp))
        except InputError as exc:
            errors.append(str(exc))
            return None
    try:
        return open_model(path)
    except InputError as exc:
        bins = bin_files(path)
        if not bins:
            errors.append(str(exc))
            return None
    tmp = Path(tempfile.mkdtemp(prefix="modularevo-bin-"))
    scratch.append(tmp)
    log.info("%s holds .bin weights: re-saving them as safetensors in %s", path, tmp)
    try:
        return open_model(convert_bin(bins, tmp))
    except InputError as exc:
        errors.append(str(exc))
        return None


def align_names(reader: ModelReader, reference: ModelReader) -> dict[str, str]:
    """Rename ``reader``'s tensors to ``reference``'s naming of the same weights, in place.

    A fine-tune saved as a bare encoder names ``encoder.layer.0…`` where its masked-LM base
    names ``bert.encoder.layer.0…``; :func:`~modularevo.modules.naming.match_names` finds
    the one prefix rule that maps them. Nothing changes when the names already agree or
    no rule maps at least half of them (another architecture: refused later, by name).

    Returns:
        old name -> new name for the renamed tensors (empty when nothing changed).
    """
    ref = set(reference.tensors)
    own = list(reader.tensors)
    if sum(n in ref for n in own) * 2 >= len(own):
        return {}
    # deferred: modularevo.modules imports torch; merges whose names agree stay torch-free
    from modularevo.modules.naming import match_names

    mapping = match_names(own, ref)
    renamed = {old: new for old, new in mapping.items() if old != new}
    if not renamed or len(set(mapping.values())) != len(mapping):
        return {}
    reader.tensors = {mapping.get(n, n): info for n, info in reader.tensors.items()}
    old, new = next(iter(renamed.items()))
    log.info("%s: %d tensors named as the base names them (e.g. %r -> %r)",
             reader.path, len(renamed), old, new)  # fmt: skip
    return renamed
