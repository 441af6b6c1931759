"""The exported training sets train as they are: each set of the simulated assistant's log is
written by :meth:`TrainingSet.write`, read back by Hugging Face ``datasets`` and fed to TRL's
trainer for it (``SFTTrainer``, ``DPOTrainer``, ``KTOTrainer``) for two optimizer steps of a
tiny causal language model on the CPU. The model and its tokenizer are made here, from a config
and from the exported texts: nothing is downloaded (the hub is switched off for the test).

Needs the optional training extra (``pip install -e .[train]``); without it the module is
skipped."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.improve.datasets import Kind
from tests.conftest import Clock
from tests.improve.assistant import AS_OF, KTO, PREFERENCES, SFT, SPEC, play

EXTRA = "the optional training extra is not installed: pip install -e .[train]"
torch: Any = pytest.importorskip("torch", reason=EXTRA)
transformers: Any = pytest.importorskip("transformers", reason=EXTRA)
trl: Any = pytest.importorskip("trl", reason=EXTRA)
datasets: Any = pytest.importorskip("datasets", reason=EXTRA)
tokenizers: Any = pytest.importorskip("tokenizers", reason=EXTRA)

# transformers deprecated the name that TRL still reads; nothing here can change that
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

STEPS = 2
PAD, EOS = "<pad>", "<eos>"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + "
    "eos_token }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
"""A chat template of our own: each message as ``<|role|>content<eos>``."""


@pytest.fixture
def sets(
    db: Path, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Kind], Any]]:
    """The simulated assistant's log on a DuckDB file; ``load(kind)`` exports that set with
    :meth:`TrainingSet.write` and reads it back with Hugging Face ``datasets``, offline."""
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    wheel = flywheel.open(SPEC, store=f"duckdb:///{db}", clock=clock, background=False, seed=7)
    play(wheel, clock)

    def load(kind: Kind) -> Any:
        path = tmp_path / "sets" / f"{kind}.jsonl"
        wheel.training_set(kind, as_of=AS_OF).write(path)
        return datasets.load_dataset(
            "json", data_files=str(path), split="train", cache_dir=str(cache / "datasets")
        )

    yield load
    wheel.close()


def _texts(rows: Any) -> Iterator[str]:
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                yield from (m["content"] for m in value)


def _tokenizer(rows: Any) -> Any:
    """A byte-level BPE tokenizer trained on the set's own texts, with pad and end tokens and
    :data:`CHAT_TEMPLATE`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_texts(rows), trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token=PAD, eos_token=EOS
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _model(tokenizer: Any) -> Any:
    """A two-layer Llama of width 32, from a config, with a fixed seed."""
    transformers.set_seed(7)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return transformers.LlamaForCausalLM(config)


def _args(config: Any, tmp_path: Path, kind: str, batch: int = 2) -> Any:
    """The trainer's config: two steps of ``batch`` rows on the CPU in full precision, a log
    line a step, nothing reported or saved."""
    names = {f.name for f in dataclasses.fields(config)}
    # activation checkpointing (the older name: gradient checkpointing) only slows a tiny model
    off = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return config(
        output_dir=str(tmp_path / "runs" / kind),
        max_steps=STEPS,
        per_device_train_batch_size=batch,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=7,
        **{off: False},
    )


def _train(trainer: Any, model: Any) -> None:
    """Two optimizer steps: they ran, their loss is finite and every parameter group moved."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = trainer.train()
    assert trainer.state.global_step == STEPS
    assert math.isfinite(result.training_loss)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)
    changed = [
        name
        for name, p in model.named_parameters()
        if not torch.equal(before[name], p.detach().to(before[name].device))
    ]
    assert changed, "no parameter changed"
    assert "model.embed_tokens.weight" in changed


def test_sft_trains_on_the_exported_conversations(
    sets: Callable[[Kind], Any], tmp_path: Path
) -> None:
    rows = sets("sft")
    assert rows.column_names == ["messages"] and len(rows) == len(SFT)
    tokenizer = _tokenizer(rows)
    model = _model(tokenizer)
    trainer = trl.SFTTrainer(
        model=model,
        args=_args(trl.SFTConfig, tmp_path, "sft"),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    _train(trainer, model)


def test_dpo_trains_on_the_exported_preferences(
    sets: Callable[[Kind], Any], tmp_path: Path
) -> None:
    rows = sets("preferences")
    assert rows.column_names == ["prompt", "chosen", "rejected"]
    assert len(rows) == len(PREFERENCES)
    tokenizer = _tokenizer(rows)
    model = _model(tokenizer)
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=_args(trl.DPOConfig, tmp_path, "dpo"),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    _train(trainer, model)


def test_kto_trains_on_the_exported_labels(sets: Callable[[Kind], Any], tmp_path: Path) -> None:
    rows = sets("kto")
    assert rows.column_names == ["prompt", "completion", "label"] and len(rows) == len(KTO)
    assert rows.features["label"].dtype == "bool"
    tokenizer = _tokenizer(rows)
    model = _model(tokenizer)
    trainer = trl.KTOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=_args(trl.KTOConfig, tmp_path, "kto", batch=4),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    _train(trainer, model)
