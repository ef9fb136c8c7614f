"""Loading a ``torch.export`` archive (``.pt2``) without letting it execute code.

``torch.export.load`` unpickles (``weights_only=False``) every weight or constant whose entry in
the archive says ``use_pickle: true``, custom and opaque objects, legacy weight files and, as a
fall-back, sample inputs that ``weights_only`` loading refuses; it also loads AOTInductor shared
libraries. A crafted archive can therefore run arbitrary code. :func:`check_archive` reads the
archive's index and configs first (plain JSON, read with torch's own zip reader so it sees the
same records) and refuses all of these; :func:`load_exported` then loads what passed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from pathlib import Path

import torch
from torch import nn

from tiekd.pipeline.errors import TeacherError

ARCHIVE_FORMAT = ("archive_format", "pt2")
"""(record, content) every current torch.export archive holds."""
MODEL = "model"
"""Name torch.export.save gives the one program of an archive."""
PROGRAM = re.compile(r"models/(.+)\.json")
"""A program's record; torch.export.load deserialises every one, with its weights, constants and sample inputs."""
WEIGHTS_CONFIG = "data/weights/{}_weights_config.json"
CONSTANTS_CONFIG = "data/constants/{}_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/{}.pt"
AOTINDUCTOR = "data/aotinductor/"
"""Compiled code torch would load as a shared library."""
LEGACY_PICKLES = ("data/weights/{}.pt", "data/constants/{}.pt")
"""A program's weights and constants in the legacy format: whole pickles."""
TENSOR_CONSTANT_PREFIX = "tensor_"
"""Constants stored as plain tensor bytes; other prefixes (custom_obj_, opaque_obj_) are pickles."""

HOW_TO_EXPORT = "re-export it with torch.export.save from plain tensors (no tensor subclasses or custom objects)"


def _refuse(path: Path, why: str) -> TeacherError:
    return TeacherError(f"export teacher {path} {why}; tiekd loads only archives that cannot run code: {HOW_TO_EXPORT}")


def _records(path: Path) -> tuple[torch._C.PyTorchFileReader, set[str]]:
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        return reader, set(reader.get_all_records())
    except RuntimeError as e:
        raise TeacherError(f"export teacher {path} is not a torch.export archive (not a readable zip file)") from e


def _json_record(reader, records: set[str], name: str, path: Path) -> dict:
    if name not in records:
        raise TeacherError(f"export teacher {path} lacks {name}; save it with torch.export.save (torch >= 2.6)")
    try:
        return json.loads(reader.get_record(name).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TeacherError(f"export teacher {path}: {name} is not valid JSON") from e


def _check_payloads(config: dict, name: str, path: Path, *, constants: bool) -> None:
    entries = config.get("config")
    if not isinstance(entries, dict):
        raise TeacherError(f"export teacher {path}: {name} has no 'config' table")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _refuse(path, f"stores {fqn!r} as a pickle")
        if constants and not str(meta.get("path_name", "")).startswith(TENSOR_CONSTANT_PREFIX):
            raise _refuse(path, f"stores constant {fqn!r} as a pickled object")


def check_archive(path: Path) -> None:
    """Raise TeacherError unless ``path`` is a current-format archive of plain tensors only: every
    program in it, not only the one tiekd runs, since torch deserialises them all."""
    reader, records = _records(path)
    format_record, format_value = ARCHIVE_FORMAT
    if format_record not in records or reader.get_record(format_record).decode(errors="replace") != format_value:
        raise TeacherError(f"export teacher {path} is not a torch.export archive; save it with torch.export.save")
    if any(record.startswith(AOTINDUCTOR) for record in records):
        raise _refuse(path, f"holds {AOTINDUCTOR} (compiled code)")
    programs = sorted(match[1] for match in map(PROGRAM.fullmatch, records) if match)
    if MODEL not in programs:
        raise TeacherError(f"export teacher {path} lacks models/{MODEL}.json; save it with torch.export.save")
    for program in programs:
        _check_program(reader, records, program, path)


def _check_program(reader, records: set[str], program: str, path: Path) -> None:
    """Refuse a program of the archive whose weights, constants or sample inputs torch would unpickle."""
    for legacy in LEGACY_PICKLES:
        if legacy.format(program) in records:
            raise _refuse(path, f"holds {legacy.format(program)} (a legacy pickle)")
    for config, constants in ((WEIGHTS_CONFIG, False), (CONSTANTS_CONFIG, True)):
        name = config.format(program)
        _check_payloads(_json_record(reader, records, name, path), name, path, constants=constants)
    sample_inputs = SAMPLE_INPUTS.format(program)
    if sample_inputs in records:  # torch falls back to weights_only=False where this fails
        try:
            torch.load(io.BytesIO(reader.get_record(sample_inputs)), weights_only=True)
        except Exception as e:
            raise _refuse(path, f"holds sample inputs that are not plain tensors ({type(e).__name__})") from e


@contextlib.contextmanager
def _quiet_torch_export():
    """torch.export logs its own tracebacks as warnings before raising; tiekd reports one line."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _image_input(program: torch.export.ExportedProgram) -> torch.Tensor | None:
    """The fake tensor of the program's image input (its first user input), or None."""
    inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" and node.name in inputs else None
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value
    return None


def static_batch(program: torch.export.ExportedProgram) -> int | None:
    """The batch size an exported program was specialised to, or None if its batch is dynamic."""
    value = _image_input(program)
    return value.shape[0] if value is not None and isinstance(value.shape[0], int) else None


def static_image_size(program: torch.export.ExportedProgram) -> tuple[int, int] | None:
    """(H, W) an exported program's image input was specialised to, or None if either is dynamic."""
    value = _image_input(program)
    if value is None or value.dim() < 2 or not all(isinstance(n, int) for n in value.shape[-2:]):
        return None
    return tuple(value.shape[-2:])


class StaticBatch(nn.Module):
    """Runs a program exported for a fixed batch ``size`` on any batch: in chunks of ``size``,
    the last one padded by repeating its final image (the padding's outputs are dropped)."""

    def __init__(self, module: nn.Module, size: int):
        super().__init__()
        self.inner, self.size = module, size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        outputs = []
        for chunk in image.split(self.size):
            missing = self.size - chunk.shape[0]
            padded = torch.cat([chunk, chunk[-1:].expand(missing, *chunk.shape[1:])]) if missing else chunk
            outputs.append(self.inner(padded)[: chunk.shape[0]])
        return torch.cat(outputs)


def load_exported(path: Path) -> nn.Module:
    """The checked archive's program as a module that accepts any batch size; its ``fixed_input``
    is the (H, W) it was exported for where that is fixed, else None."""
    check_archive(path)
    with _quiet_torch_export():
        program = torch.export.load(str(path))
    size = static_batch(program)
    module = program.module() if size is None else StaticBatch(program.module(), size)
    module.fixed_input = static_image_size(program)
    return module
