"""Sentence embeddings for the themes of negative feedback, from a static model on this machine.

The setting ``embeddings`` names the model, one of:

- ``"wordllama"``: the model the installed ``wordllama`` package ships inside itself (its
  ``l2_supercat`` model at 256 dimensions: ``weights/l2_supercat_256.safetensors`` and
  ``tokenizers/l2_supercat_tokenizer_config.json`` in the package's folder). It is read with
  wordllama's downloads disabled and its cache folder pointed at the package's own folder, so
  no other folder (``~/.cache/wordllama`` above all) is read or written. The name is matched
  exactly: a folder that happens to be called ``wordllama`` is given by a longer path, such as
  its absolute one.
- a local folder in model2vec's layout (``config.json``, ``model.safetensors`` and
  ``tokenizer.json``; sentence-transformers' static-embedding layouts are read too): one made
  with model2vec, or one that an installed package ships. It is read from that folder only.

Anything else, such as a model's id on a hub, is refused with an error that names the setting
(``embeddings``) and says what is accepted: the folder's files, or the package's, are checked
before the model is read, so nothing is ever downloaded. Each model is read once per process
(and version of its files).

A text's embedding is the mean of its tokens' vectors (model2vec's ``encode``, wordllama's
``embed``), scaled to unit length; a text with no token the model knows is a row of zeros. The
optional extra installs model2vec and wordllama: ``pip install 'flywheel[embeddings]'``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.errors import InvalidInputError

SETTING = "embeddings"
"""The field an error names: the themes' ``embeddings`` setting."""
EXTRA = "pip install 'flywheel[embeddings]'"
WORDLLAMA = "wordllama"
"""The setting's value that means the model the installed wordllama package ships."""
ACCEPTED = (
    'a local folder holding a model2vec model, or "wordllama" for the model the wordllama '
    "package ships"
)
"""What the setting accepts, as the errors say it."""
WORDLLAMA_MODEL = ("l2_supercat", 256)
"""The configuration and dimension of the model the wordllama package ships."""
WORDLLAMA_FILES = (
    "weights/l2_supercat_256.safetensors",
    "tokenizers/l2_supercat_tokenizer_config.json",
)
"""Its files, inside the package's folder."""
LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("config.json", "model.safetensors", "tokenizer.json"),
    ("config_sentence_transformers.json", "model.safetensors", "tokenizer.json"),
    (
        "config_sentence_transformers.json",
        "0_StaticEmbedding/model.safetensors",
        "0_StaticEmbedding/tokenizer.json",
    ),
)
"""The files of each folder layout model2vec reads (model2vec's own first)."""


@dataclass(frozen=True)
class Model:
    """A static embedding model read from ``path`` (for ``"wordllama"``: the package's folder):
    its name as :attr:`Themes.method` gives it, its vectors' dimension and the model."""

    path: Path
    name: str
    dim: int
    model: Any = field(repr=False, compare=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, of unit length (a text with no known token: zeros)."""
        if not texts:
            return np.zeros((0, self.dim))
        if hasattr(self.model, "encode"):  # model2vec's StaticModel
            raw = self.model.encode(list(texts), normalize=False, use_multiprocessing=False)
        else:  # wordllama's WordLlamaInference
            raw = self.model.embed(list(texts), norm=False)
        vectors = np.asarray(raw, dtype=np.float64).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1)
        return vectors / np.where(norms > 0, norms, 1.0)[:, None]


def shipped(setting: object) -> bool:
    """Whether ``setting`` is the name ``"wordllama"`` (a string or a path spelt so)."""
    return isinstance(setting, str | Path) and str(setting) == WORDLLAMA


def folder(path: str | Path) -> Path:
    """The model's folder, resolved; an :class:`InvalidInputError` naming ``embeddings`` when
    ``path`` is not a folder on this machine or holds no model's files."""
    if isinstance(path, bool) or not isinstance(path, str | Path) or not str(path).strip():
        raise InvalidInputError(SETTING, f"expected {ACCEPTED}, got {path!r}")
    found = Path(path).expanduser()
    if not found.is_dir():
        kind = "is a file, not a folder" if found.exists() else "is no folder on this machine"
        raise InvalidInputError(
            SETTING,
            f"{str(path)!r} {kind}: themes read an embedding model from this machine only "
            f"and never download one (a model's id on a hub is not accepted); expected "
            f"{ACCEPTED}",
        )
    found = found.resolve()
    if not any(all((found / name).is_file() for name in files) for files in LAYOUTS):
        expected = ", ".join(LAYOUTS[0])
        raise InvalidInputError(
            SETTING, f"{str(path)!r} holds no model2vec model: expected {expected} in it"
        )
    return found


def package() -> Path:
    """The installed wordllama package's folder, found without importing it; an
    :class:`InvalidInputError` naming ``embeddings`` when the package is not installed or
    ships no model's files."""
    spec = importlib.util.find_spec(WORDLLAMA)
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    if not places:
        raise InvalidInputError(
            SETTING,
            f'"wordllama" needs the optional extra, not installed here: {EXTRA} (the '
            "wordllama package ships the model)",
        )
    found = Path(places[0]).resolve()
    missing = [name for name in WORDLLAMA_FILES if not (found / name).is_file()]
    if missing:
        raise InvalidInputError(
            SETTING,
            f"the installed wordllama package ships no model: {', '.join(missing)} missing "
            f"in {str(found)!r}; nothing is downloaded (reinstall it: {EXTRA})",
        )
    return found


def check(setting: str | Path) -> Path:
    """The folder the model of ``setting`` is read from (the model's, or the wordllama
    package's), once the files are there and the package that reads them is installed; an
    :class:`InvalidInputError` naming ``embeddings`` otherwise. Reads no model."""
    if shipped(setting):
        return package()
    found = folder(setting)
    if importlib.util.find_spec("model2vec") is None:
        raise InvalidInputError(
            SETTING, f"embeddings need the optional extra, not installed here: {EXTRA}"
        )
    return found


def load(setting: str | Path) -> Model:
    """The model of ``setting``: ``"wordllama"``, or the folder of a model2vec model (see
    :func:`folder`), read once per model and version of its files."""
    if shipped(setting):
        found = package()
        names: Sequence[str] = WORDLLAMA_FILES
    else:
        found = folder(setting)
        names = [name for files in LAYOUTS for name in files]
    stamps = tuple(
        (name, (found / name).stat().st_mtime_ns) for name in names if (found / name).is_file()
    )
    if shipped(setting):
        return _wordllama(found, stamps)
    return _load(found, stamps)


@lru_cache(maxsize=4)
def _load(found: Path, stamps: tuple[tuple[str, int], ...]) -> Model:
    try:
        from model2vec import StaticModel
    except ImportError as err:
        raise InvalidInputError(
            SETTING, f"embeddings need the optional extra, not installed here: {EXTRA} ({err})"
        ) from err
    try:
        model = StaticModel.from_pretrained(found)
    except Exception as err:  # a broken file: model2vec raises what its readers raise
        raise InvalidInputError(
            SETTING, f"the model in {str(found)!r} cannot be read: {err}"
        ) from err
    return Model(found, found.name, int(model.dim), model)


@lru_cache(maxsize=1)
def _wordllama(found: Path, stamps: tuple[tuple[str, int], ...]) -> Model:
    """The model the wordllama package in ``found`` ships, read from that folder only: its
    cache folder is the package's own (where the tokenizer's file lies; the weights are found
    there first anyway) and downloads are disabled."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from wordllama import WordLlama
    except ImportError as err:
        raise InvalidInputError(
            SETTING, f"embeddings need the optional extra, not installed here: {EXTRA} ({err})"
        ) from err
    finally:  # importing wordllama configures the root logger (logging.basicConfig): undone
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    config, dim = WORDLLAMA_MODEL
    try:
        model = WordLlama.load(config, cache_dir=found, dim=dim, disable_download=True)
    except Exception as err:  # a missing or broken file: what wordllama's readers raise
        raise InvalidInputError(
            SETTING, f"the model the wordllama package ships cannot be read: {err}"
        ) from err
    return Model(found, f"wordllama {config}", int(model.embedding.shape[1]), model)


def embed(texts: Sequence[str], setting: str | Path) -> np.ndarray:
    """``texts`` embedded by the model of ``setting``: one unit-length row each."""
    return load(setting).embed(texts)
