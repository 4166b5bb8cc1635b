"""Language modelling (issue 5): text pipeline, samplers, recurrent state, scratch vs built-in RNNs, CLI."""

import functools
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from dlrun.data.text import (
    TIME_MACHINE_URL,
    SequenceBatches,
    TextFileData,
    TimeMachineData,
    Vocab,
    preprocess,
    tokenize,
)
from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.models.rnn import RNNLanguageModel, copy_builtin_weights
from dlrun.tasks.language_model import LanguageModelTask

SENTENCES = (
    "The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite matter "
    "to us.\nHis grey eyes shone and twinkled, and his usually pale face was flushed and animated.\n"
    "The fire burned brightly, and the soft radiance of the incandescent lights caught the bubbles.\n"
)
TINY = ["data.batch_size=4", "data.num_steps=8", "model.hidden_size=16"]


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(SENTENCES * 8)  # ~2,400 characters
    return path


def small_data(path, **kwargs) -> TextFileData:
    return TextFileData(path, **({"batch_size": 4, "num_steps": 8} | kwargs))


# ------------------------------------------------------------------ text, vocabulary
def test_preprocess_tokenize_and_vocab_round_trip(text_file):
    assert preprocess("The Time-Machine!!\n\n by H. G. Wells, 1898\n") == "the time machine by h g wells"
    chars = tokenize("ab ba a", "char")
    assert chars == ["a", "b", " ", "b", "a", " ", "a"]
    vocab = Vocab(chars)
    assert vocab.idx_to_token == ["<unk>", "a", "b", " "]  # by frequency, ties by first appearance
    assert vocab[["b", "z"]] == [2, 0] and vocab.to_tokens([1, 3, 2]) == ["a", " ", "b"]

    words = tokenize(preprocess("the cat saw the dog; the cat ran"), "word")
    vocab = Vocab(words, min_freq=2, reserved_tokens=["<pad>"])
    assert vocab.idx_to_token == ["<unk>", "<pad>", "the", "cat"]
    assert vocab[words][:4] == [2, 3, 0, 2]

    data = small_data(text_file)
    assert len(data.vocab) == data.model_kwargs["vocab_size"] <= 28
    sentence = preprocess(SENTENCES)
    assert data.decode(data.encode(SENTENCES)) == sentence
    words = small_data(text_file, token="word", num_steps=4)
    assert words.decode(words.encode(SENTENCES)) == sentence


def test_splits_keep_the_book_corpus_and_hold_out_the_end(text_file):
    full = small_data(text_file)
    ids = torch.tensor(full.vocab[tokenize(preprocess(text_file.read_text()), "char")])
    num_val = round(0.1 * len(ids))
    assert torch.equal(full.val_ids, ids[-num_val:]) and torch.equal(full.train_ids, ids[:-num_val])
    cut = small_data(text_file, max_tokens=500)
    assert torch.equal(cut.train_ids, ids[:500]) and torch.equal(cut.val_ids, full.val_ids)
    with pytest.raises(DlrunError, match="fewer than one batch"):
        small_data(text_file, batch_size=64, num_steps=35)
    with pytest.raises(DlrunError, match="not found"):
        TextFileData(text_file.parent / "missing.txt")


def test_time_machine_missing_says_where_and_how_to_get_it(tmp_path):
    with pytest.raises(DlrunError) as err:
        TimeMachineData(tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "timemachine.txt") in message and TIME_MACHINE_URL in message
    assert "\n" not in message


@pytest.mark.skipif(
    not (Path(os.environ.get("DLRUN_DATA_DIR", "data")) / "timemachine.txt").is_file(),
    reason="needs DLRUN_DATA_DIR/timemachine.txt",
)
def test_time_machine_as_the_v2_book():
    data = TimeMachineData(os.environ.get("DLRUN_DATA_DIR", "data"), download=False, max_tokens=10000)
    assert len(data.vocab) == 28 and data.vocab.idx_to_token[:4] == ["<unk>", " ", "e", "t"]
    assert len(data.train_ids) == 10000
    assert data.decode(data.train_ids[:30].tolist()) == "the time machine by h g wells "


# ------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_samplers_use_every_position_once_with_y_shifted_by_one(sampling):
    n, batch, steps = 1000, 4, 7
    corpus = torch.arange(n)  # token = its position
    offsets = set()
    for epoch in range(1, 6):
        gen = torch.Generator().manual_seed(epoch)
        batches = list(SequenceBatches(corpus, batch, steps, sampling, torch.device("cpu"), gen))
        assert len(batches) == len(SequenceBatches(corpus, batch, steps, sampling, torch.device("cpu"), gen))
        xs = torch.stack([x for x, _ in batches])  # (num_batches, batch, steps)
        for x, y in batches:
            assert x.shape == (batch, steps) and torch.equal(y, x + 1)
        positions = xs.flatten()
        assert len(positions.unique()) == len(positions)  # no position twice
        head = int(positions.min())
        offsets.add(head)
        if sampling == "random":  # whole subsequences after the head; fewer than a batch of them left out
            assert head < steps
            starts = xs[..., 0].flatten()
            assert torch.equal(xs, starts.reshape(xs.shape[:2])[..., None] + torch.arange(steps))
            assert torch.equal((starts - head) % steps, torch.zeros_like(starts))
            assert 0 <= (n - head - 1) // steps - len(starts) < batch
        else:  # rows run on from batch to batch, each a contiguous slice of the text
            assert head <= steps
            rows = xs.permute(1, 0, 2).reshape(batch, -1)
            assert torch.equal(rows[:, 1:] - rows[:, :-1], torch.ones_like(rows[:, 1:]))
            row_len = (n - head - 1) // batch
            assert torch.equal(rows[:, 0], head + row_len * torch.arange(batch))
            assert row_len - rows.shape[1] < steps
    assert len(offsets) > 1  # the head changes with the epoch


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_epoch_order_depends_on_seed_and_epoch_only_and_skip_resumes(text_file, sampling):
    data = small_data(text_file, sampling=sampling)
    data.setup(torch.device("cpu"), seed=3)
    first = [x for x, _ in data.train_loader(epoch=2)]
    again = [x for x, _ in data.train_loader(epoch=2)]
    other = [x for x, _ in data.train_loader(epoch=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=False))
    resumed = data.train_loader(epoch=2, skip=3)
    assert len(resumed) == len(first)
    assert all(torch.equal(a, b) for (a, _), b in zip(resumed, first[3:], strict=True))


def test_data_parallel_ranks_split_the_rows(text_file):
    data = small_data(text_file)
    data.setup(torch.device("cpu"), seed=0)
    whole = next(iter(data.train_loader(epoch=1)))[0]
    parts = []
    for rank in range(2):
        data.setup(torch.device("cpu"), seed=0, rank=rank, world_size=2)
        parts.append(next(iter(data.train_loader(epoch=1)))[0])
    assert torch.equal(torch.stack(parts, dim=1).reshape(whole.shape), whole)


# ---------------------------------------------------------------------------- state
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_state_is_detached_for_sequential_and_fresh_for_random(text_file, cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(28, cell, hidden_size=8)
    task = LanguageModelTask()
    sequential = small_data(text_file)
    sequential.setup(torch.device("cpu"))
    task.on_fit_start(model, FitContext(Path("."), None, sequential))
    batches = list(sequential.train_loader(epoch=1))
    loss, stats, count = task.training_step(model, batches[0])
    assert count == batches[0][1].numel() and not stats["loss"].requires_grad
    loss.backward()
    for s in task.state if cell == "lstm" else (task.state,):
        assert s.grad_fn is None and not s.requires_grad and s.shape == (1, 4, 8)
    carried = task.state
    x, y = batches[1]
    expected = torch.nn.functional.cross_entropy(model(x, carried)[0].reshape(-1, 28), y.reshape(-1))
    assert torch.allclose(task.training_step(model, batches[1])[0], expected)
    task.on_validation_start(model, None)
    assert task.state is None
    task.training_step(model, batches[0])
    task.on_train_epoch_start(model, None)
    assert task.state is None

    random = small_data(text_file, sampling="random")
    random.setup(torch.device("cpu"))
    task.on_fit_start(model, FitContext(Path("."), None, random))
    x, y = next(iter(random.train_loader(epoch=1)))
    loss = task.training_step(model, (x, y))[0]
    assert task.state is None  # nothing carried: every batch starts from zeros
    fresh = torch.nn.functional.cross_entropy(model(x)[0].reshape(-1, 28), y.reshape(-1))
    assert torch.allclose(loss, fresh)


def test_compute_gives_mean_loss_and_perplexity():
    metrics = LanguageModelTask.compute({"loss": 2.0 * 70}, 70)
    assert metrics["loss"] == pytest.approx(2.0) and metrics["ppl"] == pytest.approx(7.389056)
    assert LanguageModelTask.compute({}, 0) == {}
    assert LanguageModelTask.compute({"loss": 1e6}, 1)["ppl"] == float("inf")


# ------------------------------------------------------------------ scratch vs built-in
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)])
def test_scratch_and_builtin_agree_with_the_same_weights(cell, layers, bidirectional):
    torch.manual_seed(0)
    extra = {"reset_after": True} if cell == "gru" else {}
    builtin = RNNLanguageModel(11, cell, 6, layers, bidirectional)
    scratch = RNNLanguageModel(11, cell, 6, layers, bidirectional, scratch=True, **extra)
    copy_builtin_weights(scratch, builtin)
    x = torch.randint(11, (3, 5))
    state = builtin.begin_state(3, "cpu")
    state = tuple(torch.randn_like(s) for s in state) if cell == "lstm" else torch.randn_like(state)
    (out_b, state_b), (out_s, state_s) = builtin(x, state), scratch(x, state)
    assert out_b.shape == (3, 5, 11)
    torch.testing.assert_close(out_s, out_b)
    for a, b in zip(*(s if cell == "lstm" else (s,) for s in (state_s, state_b)), strict=True):
        torch.testing.assert_close(a, b)
    out_b.square().sum().backward()
    out_s.square().sum().backward()
    torch.testing.assert_close(scratch.output.weight.grad, builtin.output.weight.grad)


def test_embedding_inputs_agree_too():
    torch.manual_seed(0)
    builtin = RNNLanguageModel(11, "lstm", 6, embed_size=4)
    scratch = RNNLanguageModel(11, "lstm", 6, scratch=True, embed_size=4)
    copy_builtin_weights(scratch, builtin)
    x = torch.randint(11, (2, 5))
    torch.testing.assert_close(scratch(x)[0], builtin(x)[0])


def test_book_gru_resets_before_the_recurrent_product():
    torch.manual_seed(0)
    model = RNNLanguageModel(5, "gru", 4, scratch=True)
    layer = model.rnn.layers[0]
    assert not hasattr(layer, "b_hn")
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    x, h = torch.tensor([[2]]), torch.randn(1, 1, 4)
    xo = torch.nn.functional.one_hot(x[0], 5).float()
    z = torch.sigmoid(xo @ layer.W_xz + h[0] @ layer.W_hz + layer.b_z)
    r = torch.sigmoid(xo @ layer.W_xr + h[0] @ layer.W_hr + layer.b_r)
    h_tilde = torch.tanh(xo @ layer.W_xh + (r * h[0]) @ layer.W_hh + layer.b_h)
    torch.testing.assert_close(model(x, h)[1][0], z * h[0] + (1 - z) * h_tilde)
    with pytest.raises(DlrunError, match="scratch"):
        RNNLanguageModel(5, "gru", 4, reset_after=False)


def test_scratch_init_is_the_books():
    torch.manual_seed(0)
    model = RNNLanguageModel(28, "rnn", 512, scratch=True)
    layer = model.rnn.layers[0]
    assert layer.W_hh.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(layer.b_h) == 0 and torch.count_nonzero(model.output.bias) == 0
    assert sum(p.numel() for p in model.parameters()) == 28 * 512 + 512 * 512 + 512 + 512 * 28 + 28


def test_generate_is_greedy_and_starts_with_the_prefix(text_file):
    torch.manual_seed(0)
    data = small_data(text_file)
    model = RNNLanguageModel(len(data.vocab), "lstm", 8, num_layers=2, bidirectional=True)
    task = LanguageModelTask(num_preds=10)
    text = task.generate(model, "Time Traveller!", data=data)
    assert text.startswith("time traveller") and len(text) == len("time traveller") + 10
    assert task.generate(model, "time traveller", data=data) == text
    assert model.training  # generate leaves the mode as it found it


# ------------------------------------------------------------------------- training
@pytest.fixture
def fit(fit_run):
    """A small GRU language model, SGD lr 1 with clipping, a sample every epoch: the run's summary."""

    def fit_lm(data, run_dir, max_epochs, resume=None, cell="gru"):
        summary, _ = fit_run(
            run_dir,
            model=lambda: RNNLanguageModel(len(data.vocab), cell, 16),
            data=data,
            task=LanguageModelTask(num_preds=5, sample_every_n_epochs=1),
            optimizer=functools.partial(torch.optim.SGD, lr=1.0),
            seed=7,
            max_epochs=max_epochs,
            gradient_clip_val=1.0,
            resume=resume,
            monitor="val/loss",
            monitor_mode="min",
        )
        return summary

    return fit_lm


def test_resume_at_an_epoch_boundary_is_exact_for_sequential_sampling(text_file, tmp_path, fit):
    data = small_data(text_file)
    straight = fit(data, tmp_path / "straight", 3)
    fit(data, tmp_path / "resumed", 1)
    resumed = fit(data, tmp_path / "resumed", 3, resume=str(tmp_path / "resumed"))
    assert resumed["resumed_from"] and resumed["epochs"] == 3
    for key in ("train/loss", "val/ppl"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in straight["history"]], key
    assert straight["final"]["train/ppl"] < straight["history"][0]["train/ppl"]


def test_cli_trains_on_a_text_file_and_predicts_from_the_run(text_file, tmp_path):
    common = ["task=language_model", "data=text", f"data.path={text_file}", "model=gru", *TINY]
    proc = run_cli(
        [
            *common,
            "trainer.max_epochs=2",
            "trainer.gradient_clip_val=1",
            "optim.lr=1",
            "task.sample_every_n_epochs=1",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["monitor"] == "val/ppl"
    for key in ("train/loss", "train/ppl", "val/loss", "val/ppl"):
        assert key in metrics["final"], key
    assert "sample (epoch 2): time traveller" in proc.stderr
    assert "sample: traveller" in proc.stderr

    proc = run_cli(
        [*common, "mode=predict", f"ckpt_path={tmp_path}/run", f"hydra.run.dir={tmp_path}/predict"],
        cwd=tmp_path,
    )
    samples = (tmp_path / "predict" / "samples.txt").read_text().splitlines()
    assert samples[0].startswith("time traveller") and samples[1].startswith("traveller")
    assert f"sample: {samples[0]}" in proc.stderr

    proc = run_cli(
        ["task=language_model", "data=timemachine", "model=gru", "data.download=false",
         f"paths.data_dir={tmp_path}/nothing", f"hydra.run.dir={tmp_path}/missing"],
        cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and TIME_MACHINE_URL in proc.stderr
    assert "Traceback" not in proc.stderr


def test_time_machine_downloads_when_missing(tmp_path, monkeypatch):
    """The `download` option once shadowed the download function: a missing file crashed instead."""
    import dlrun.data.text as text

    def fake_fetch(url, path, sha1):
        assert url == text.TIME_MACHINE_URL
        path.write_text("the time traveller " * 400)

    monkeypatch.setattr(text, "fetch", fake_fetch)
    data = text.TimeMachineData(root=tmp_path, batch_size=2, num_steps=5)
    assert (tmp_path / "timemachine.txt").is_file() and len(data.vocab) > 5
