"""Themes from sentence embeddings (the optional extra ``flywheel[embeddings]``): a static
model made here and saved in model2vec's layout recovers the planted themes, and themes said
in words that share no term, which TF-IDF splits; the TF-IDF terms still label them. The model
the wordllama package ships (``embeddings="wordllama"``) recovers the planted themes too, and
is read from the package's folder only. A name that is no model's folder, a hub id above all,
is refused with an error naming the setting, without the extra too."""

from __future__ import annotations

import importlib.util
import random
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import flywheel
from flywheel.errors import InvalidInputError
from flywheel.improve import embeddings
from flywheel.improve import themes as loop
from tests.conftest import Clock
from tests.improve.assistant import (
    DETAIL,
    NOISE,
    PHRASINGS,
    PRAISE,
    THEMES_AS_OF,
    THEMES_SPEC,
    play_themes,
)

EXTRA = "the optional embeddings extra is not installed: pip install -e .[embeddings]"
HAS_EXTRA = importlib.util.find_spec("model2vec") is not None
HAS_WORDLLAMA = importlib.util.find_spec("wordllama") is not None
needs_wordllama = pytest.mark.skipif(not HAS_WORDLLAMA, reason=EXTRA)
SHIPPED = "embeddings (wordllama l2_supercat, 256 dimensions) + average-linkage"

MEANINGS: dict[str, list[str]] = {
    "verbose": ["long", "verbose", "winded", "wordy", "rambling", "lengthy", "padded"],
    "outdated": ["outdated", "date", "year", "facts", "obsolete", "stale", "old"],
    "rude": ["rude", "condescending", "dismissive", "tone", "impolite", "arrogant", "insulting"],
    "sources": ["sources", "cited", "cite", "citations", "unreferenced", "references", "proof"],
}
"""The words the model made here gives each theme's meaning (close vectors): the planted
phrasings' key words and synonyms that share no word with them."""
SYNONYMS: dict[str, list[str]] = {
    "verbose": ["wordy", "rambling", "lengthy", "padded"],
    "outdated": ["obsolete", "stale", "old"],
    "rude": ["impolite", "arrogant", "insulting"],
    "sources": ["unreferenced", "no references", "no proof"],
}
"""Each theme said in words that share no term: TF-IDF cannot join them, embeddings can."""
DIM = 24


def _words() -> list[str]:
    texts = [*NOISE, *PRAISE, *(p for ps in PHRASINGS.values() for p in ps)]
    texts += [w for ws in (*MEANINGS.values(), *SYNONYMS.values()) for w in ws]
    words = {w for t in texts for w in t.lower().replace(",", " ").replace("'", " ").split()}
    return sorted(words)


def make_model(folder: Path) -> Path:
    """A static embedding model saved in model2vec's layout: a word-level tokenizer (lower
    case, words and punctuation) over the planted texts' words, a vector per word. A theme's
    words point along that theme's own axis, all other words (noise, praise, stop words) in
    random directions at half the length, punctuation nearly nowhere."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = _words()
    punctuation = [".", ",", "'", "!", "?"]
    vocab = {token: i for i, token in enumerate(["[UNK]", *punctuation, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    rng = np.random.default_rng(7)
    vectors = np.zeros((len(vocab), DIM), dtype=np.float32)
    axes = {theme: i for i, theme in enumerate(MEANINGS)}
    for token, i in vocab.items():
        theme = next((t for t, ws in MEANINGS.items() if token in ws), None)
        if theme is not None:
            vectors[i, axes[theme]] = 1.0
            vectors[i] += rng.normal(0.0, 0.05, DIM)
        elif token in punctuation:
            vectors[i] = rng.normal(0.0, 0.01, DIM)
        elif token != "[UNK]":
            vectors[i] = rng.normal(0.0, 0.5 / np.sqrt(DIM), DIM)
    StaticModel(vectors, tokenizer, normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """The folder of the model made here; skips without the extra."""
    pytest.importorskip("model2vec", reason=EXTRA)
    return make_model(tmp_path / "static-model")


@pytest.fixture
def make(store_url: str, clock: Clock) -> Iterator[Callable[[], flywheel.Wheel]]:
    opened: list[flywheel.Wheel] = []

    def make() -> flywheel.Wheel:
        wheel = flywheel.open(THEMES_SPEC, store=store_url, clock=clock, background=False, seed=7)
        opened.append(wheel)
        return wheel

    yield make
    for wheel in opened:
        wheel.close()


def test_embeddings_recover_the_planted_themes(
    make: Callable[[], flywheel.Wheel], clock: Clock, model: Path
) -> None:
    wheel = make()
    planted = play_themes(wheel, clock)
    wheel.flush()
    found = loop.themes(wheel.store, wheel.spec, "28d", THEMES_AS_OF, embeddings=model)
    assert found.reason is None and len(found.themes) == len(PHRASINGS)
    assert found.method.startswith("embeddings (static-model, 24 dimensions) + average-linkage")
    assert found.method.endswith("; labels from tfidf")
    negative = [d for d, theme in planted.items() if theme is not None]
    cluster = {d: i for i, t in enumerate(found.themes) for d in t.decisions}
    assert sorted(cluster) == sorted(negative)
    score = adjusted_rand_score([planted[d] for d in negative], [cluster[d] for d in negative])
    assert score >= 0.8, f"adjusted Rand index {score:.3f}"

    # the labels are TF-IDF terms, the examples the theme's own texts
    key = {"verbose": "long", "outdated": "outdated", "rude": "rude", "sources": "sources"}
    for name, word in key.items():
        theme = max(found.themes, key=lambda t: sum(planted[d] == name for d in t.decisions))
        assert word in theme.terms, (name, theme.label)
        assert all(any(p in e.lower() for p in PHRASINGS[name]) for e in theme.examples)

    # the same rows give the same themes; without embeddings, TF-IDF's
    again = loop.themes(wheel.store, wheel.spec, "28d", THEMES_AS_OF, embeddings=str(model))
    assert again.as_dict() == found.as_dict()
    assert wheel.themes("28d", as_of=THEMES_AS_OF).method.startswith("tfidf + ")

    proposal = loop.propose(
        wheel.store, wheel.spec, "prompt", DETAIL, as_of=THEMES_AS_OF, embeddings=model
    )
    assert proposal.themes and {t.label for t in proposal.themes} <= {t.label for t in found.themes}


def _said_in_other_words(seed: int) -> tuple[list[str], list[str]]:
    """200 complaints, each a synonym of its theme between noise words, and their themes."""
    rng = random.Random(seed)
    texts, truth = [], []
    for _ in range(200):
        theme = rng.choice(list(SYNONYMS))
        words = [rng.choice(SYNONYMS[theme])]
        if rng.random() < 0.5:
            words.insert(0, rng.choice(NOISE))
        if rng.random() < 0.5:
            words.append(rng.choice(NOISE))
        texts.append(" ".join(words).capitalize() + ".")
        truth.append(theme)
    return texts, truth


def test_embeddings_join_what_shares_no_word(model: Path) -> None:
    texts, truth = _said_in_other_words(seed=3)
    embedded = loop.cluster(texts, embeddings=model)
    tfidf = loop.cluster(texts)
    assert not isinstance(embedded, str) and not isinstance(tfidf, str)
    score = adjusted_rand_score(truth, embedded.labels)
    assert score >= 0.8, f"adjusted Rand index {score:.3f}"
    assert len(set(embedded.labels.tolist())) == len(SYNONYMS)
    # TF-IDF splits each theme into its words
    assert adjusted_rand_score(truth, tfidf.labels) < 0.5
    assert embedded.method.startswith("embeddings (") and tfidf.method.startswith("tfidf + ")


def test_the_model_embeds_to_unit_rows(model: Path) -> None:
    loaded = embeddings.load(model)
    assert embeddings.load(str(model)) is loaded  # read once
    rows = embeddings.embed(["Too long.", "rude tone", "xyzzy"], model)
    assert rows.shape == (3, DIM) and rows.dtype == np.float64
    assert np.allclose(np.linalg.norm(rows[:2], axis=1), 1.0)
    assert not rows[2].any()  # no known word: zeros
    # words of one meaning are close, of two others far apart
    assert float(rows[1] @ embeddings.embed(["Condescending!"], model)[0]) > 0.8
    assert float(rows[0] @ rows[1]) < 0.5
    assert embeddings.embed([], model).shape == (0, DIM)


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("minishlab/potion-base-8M", "is no folder on this machine"),
        ("no/such/folder", "is no folder on this machine"),
        ("", 'expected a local folder holding a model2vec model, or "wordllama"'),
    ],
)
def test_a_hub_id_or_a_missing_folder_is_refused(
    name: str, said: str, make: Callable[[], flywheel.Wheel]
) -> None:
    with pytest.raises(InvalidInputError, match=said) as raised:
        embeddings.load(name)
    assert raised.value.field == "embeddings"
    assert '"wordllama" for the model the wordllama package ships' in raised.value.reason
    if name:
        assert "never download" in raised.value.reason and "local folder" in raised.value.reason
    wheel = make()  # themes check the setting before reading anything
    with pytest.raises(InvalidInputError, match="embeddings: "):
        loop.themes(wheel.store, wheel.spec, "28d", THEMES_AS_OF, embeddings=name)
    with pytest.raises(InvalidInputError, match="embeddings: "):
        loop.propose(wheel.store, wheel.spec, "prompt", DETAIL, embeddings=name)


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no model2vec model: expected config"):
        embeddings.load(tmp_path / "empty")
    (tmp_path / "file").write_text("not a model")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        embeddings.load(tmp_path / "file")
    with pytest.raises(InvalidInputError, match="expected a local folder"):
        embeddings.load(7)  # type: ignore[arg-type]


@pytest.mark.skipif(HAS_EXTRA, reason="the embeddings extra is installed")
def test_without_the_extra_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    folder = tmp_path / "static-model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    with pytest.raises(InvalidInputError, match=r"pip install 'flywheel\[embeddings\]'"):
        embeddings.load(folder)


def test_a_broken_model_is_refused(tmp_path: Path, model: Path) -> None:
    (model / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        embeddings.load(model)


# --- the model the wordllama package ships ----------------------------------------------------


@needs_wordllama
@pytest.mark.parametrize("seed", [7, 3, 11])
def test_the_shipped_model_recovers_the_planted_themes(
    seed: int, make: Callable[[], flywheel.Wheel], clock: Clock
) -> None:
    wheel = make()
    planted = play_themes(wheel, clock, seed=seed)
    found = wheel.themes("28d", as_of=THEMES_AS_OF, embeddings="wordllama")
    assert found.reason is None and len(found.themes) == len(PHRASINGS)
    assert found.method.startswith(SHIPPED) and found.method.endswith("; labels from tfidf")
    negative = [d for d, theme in planted.items() if theme is not None]
    cluster = {d: i for i, t in enumerate(found.themes) for d in t.decisions}
    assert sorted(cluster) == sorted(negative)
    score = adjusted_rand_score([planted[d] for d in negative], [cluster[d] for d in negative])
    assert score >= 0.8, f"adjusted Rand index {score:.3f}"
    for name, word in {"verbose": "long", "rude": "rude", "sources": "sources"}.items():
        theme = max(found.themes, key=lambda t: sum(planted[d] == name for d in t.decisions))
        assert word in theme.terms, (name, theme.label)

    # a path spelt "wordllama" (as the command line passes it) names the same model
    again = loop.themes(wheel.store, wheel.spec, "28d", THEMES_AS_OF, embeddings=Path("wordllama"))
    assert again.as_dict() == found.as_dict()
    proposal = loop.propose(
        wheel.store, wheel.spec, "prompt", DETAIL, as_of=THEMES_AS_OF, embeddings="wordllama"
    )
    assert proposal.themes and {t.label for t in proposal.themes} <= {t.label for t in found.themes}


@needs_wordllama
def test_the_shipped_model_splits_synonyms_but_mixes_no_themes() -> None:
    """Said in bare synonyms (``wordy``, ``rambling``, ``lengthy``, ``padded``), a theme is
    split by the shipped model into some of its words (eight clusters for four themes: an
    adjusted Rand index of 0.65, where the model made here reaches 0.8), but nearly no cluster
    mixes two themes (purity 0.995); TF-IDF, which cannot join any two words, mixes them
    (0.22, purity 0.73)."""
    texts, truth = _said_in_other_words(seed=3)
    embedded = loop.cluster(texts, embeddings="wordllama")
    tfidf = loop.cluster(texts)
    assert not isinstance(embedded, str) and not isinstance(tfidf, str)
    assert embedded.method.startswith(SHIPPED)

    def purity(labels: np.ndarray) -> float:
        """The share of the texts whose cluster's commonest theme is their own."""
        found = Counter(zip(labels.tolist(), truth, strict=True))
        top = {k: max(m for (c, _), m in found.items() if c == k) for k, _ in found}
        return sum(top.values()) / len(truth)

    score = adjusted_rand_score(truth, embedded.labels)
    assert score >= 0.6, f"adjusted Rand index {score:.3f}"
    assert purity(embedded.labels) >= 0.95 > purity(tfidf.labels)
    assert score > adjusted_rand_score(truth, tfidf.labels) + 0.3


@needs_wordllama
def test_the_shipped_model_embeds_to_unit_rows() -> None:
    loaded = embeddings.load("wordllama")
    assert embeddings.load(Path("wordllama")) is loaded  # read once
    assert (loaded.name, loaded.dim) == ("wordllama l2_supercat", 256)
    rows = embeddings.embed(
        ["Too long.", "way too long", "rude tone", "condescending and rude", ""], "wordllama"
    )
    assert rows.shape == (5, 256) and rows.dtype == np.float64
    assert np.allclose(np.linalg.norm(rows[:4], axis=1), 1.0)
    assert not rows[4].any()  # no token: zeros
    # one complaint in two phrasings is closer than two complaints
    assert float(rows[0] @ rows[1]) > 0.5 and float(rows[2] @ rows[3]) > 0.4
    assert abs(float(rows[0] @ rows[2])) < 0.2
    assert embeddings.embed([], "wordllama").shape == (0, 256)


@needs_wordllama
def test_the_shipped_model_is_read_from_the_package_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read afresh with no network and a home of its own: every file wordllama resolves lies
    in the package's folder, and no cache folder is made or read."""
    import requests
    import wordllama

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(wordllama.WordLlama, "DEFAULT_CACHE_DIR", home / ".cache" / "wordllama")

    def offline(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access: {args} {kwargs}")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(requests, "get", offline)
    resolved: list[Path] = []
    resolve = wordllama.WordLlama.resolve_file

    def spy(*args: object, **kwargs: object) -> Path:
        path: Path = resolve(*args, **kwargs)
        resolved.append(path)
        return path

    monkeypatch.setattr(wordllama.WordLlama, "resolve_file", spy)
    embeddings._wordllama.cache_clear()
    loaded = embeddings.load("wordllama")
    shipped = Path(wordllama.__file__).parent.resolve()
    assert loaded.path == shipped == embeddings.check("wordllama")
    assert sorted(resolved) == sorted(shipped / name for name in embeddings.WORDLLAMA_FILES)
    assert embeddings.embed(["too long"], "wordllama").shape == (1, 256)
    assert list(home.iterdir()) == []  # no ~/.cache/wordllama


def test_without_wordllama_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[], flywheel.Wheel]
) -> None:
    monkeypatch.setitem(sys.modules, "wordllama", None)  # as if it were not installed
    with pytest.raises(InvalidInputError, match=r"pip install 'flywheel\[embeddings\]'") as raised:
        embeddings.load("wordllama")
    assert raised.value.field == "embeddings"
    wheel = make()  # themes check the setting before reading anything
    with pytest.raises(InvalidInputError, match=r"embeddings: .*flywheel\[embeddings\]"):
        loop.themes(wheel.store, wheel.spec, "28d", THEMES_AS_OF, embeddings="wordllama")


@needs_wordllama
def test_a_package_without_its_model_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    files = ("weights/l2_supercat_256.safetensors", "tokenizers/no_such_tokenizer.json")
    monkeypatch.setattr(embeddings, "WORDLLAMA_FILES", files)
    with pytest.raises(InvalidInputError, match="ships no model: tokenizers/no_such") as raised:
        embeddings.load("wordllama")
    assert raised.value.field == "embeddings" and "nothing is downloaded" in raised.value.reason
