"""Machine translation (issue 6): pair preprocessing and splits, masked loss, BLEU, greedy and beam decoding,
attention masking, scratch Transformer vs nn.Transformer, heatmaps, CLI training and mode=translate."""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torch.nn import functional as F

from dlrun.data.translation import FRA_ENG_URL, FraEngData, TranslationData, preprocess, tokenize
from dlrun.engine.contracts import FitContext
from dlrun.errors import DlrunError
from dlrun.loggers.tensorboard import TensorBoardLogger
from dlrun.models.attention import AdditiveAttention, MultiHeadAttention, masked_softmax
from dlrun.models.bahdanau import Bahdanau
from dlrun.models.seq2seq import Seq2Seq
from dlrun.models.transformer import Transformer, copy_scratch_weights
from dlrun.run import run
from dlrun.tasks.bleu import bleu
from dlrun.tasks.decoding import beam_search, greedy
from dlrun.tasks.seq2seq import Seq2SeqTask, masked_cross_entropy

# Raw lines as in fra.txt: narrow no-break spaces before "!", capitals, punctuation glued to words.
PAIRS = [
    ("Go.", "Va\u202f!"),
    ("I lost.", "J'ai perdu."),
    ("I'm home.", "Je suis chez moi."),
    ("He's calm.", "Il est calme."),
    ("I'm calm.", "Je suis calme."),
    ("He's home.", "Il est chez lui."),
    ("I'm lost.", "Je suis perdu."),
    ("Go home.", "Va chez toi\xa0!"),
    ("He lost.", "Il a perdu."),
    ("I'm cold, I'm home.", "J'ai froid, je suis chez moi."),
]
TINY = ["data.batch_size=8", "data.num_steps=6", "data.num_examples=null", "data.num_val=6"]


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.txt"
    lines = [f"{en}\t{fr}\tCC-BY 2.0 (France) Attribution: tatoeba.org" for en, fr in PAIRS * 3]
    path.write_text("\n".join(lines + ["a line without a tab", ""]), encoding="utf-8")
    return path


def tiny_data(path, **kwargs) -> TranslationData:
    return TranslationData(
        path, **({"batch_size": 4, "num_steps": 6, "num_examples": 10, "num_val": 5} | kwargs)
    )


# ------------------------------------------------------------------------- data
def test_preprocessing_is_the_books():
    assert preprocess("Go.\u202f!") == "go . !"
    assert preprocess("Hello,World!\xa0I'm home.") == "hello ,world ! i'm home ."
    assert preprocess("Wait... ok ?") == "wait . . . ok ?"  # each mark after a non-space gets one
    assert tokenize("J'ai perdu.") == ["j'ai", "perdu", "."]


def test_vocab_padding_and_valid_lengths(pairs_file):
    data = tiny_data(pairs_file)
    assert data.train_pairs[0] == (["go", "."], ["va", "!"])
    assert data.tgt_vocab.idx_to_token[:4] == ["<unk>", "<pad>", "<bos>", "<eos>"]
    # min_freq 2 over the training pairs only: "froid" occurs once in the first 10 pairs.
    assert data.tgt_vocab["froid"] == data.tgt_vocab.unk and data.tgt_vocab["perdu"] != data.tgt_vocab.unk
    assert data.model_kwargs == {"src_vocab_size": len(data.src_vocab), "tgt_vocab_size": len(data.tgt_vocab)}
    src, src_len, tgt, tgt_len = data.train_tensors
    v = data.tgt_vocab
    assert tgt[1].tolist() == [*v[["j'ai", "perdu", "."]], v["<eos>"], v["<pad>"], v["<pad>"]]
    assert tgt_len[1] == 4
    # "j'ai froid , je suis chez moi ." has 8 words: cut to 6 tokens, no room left for <eos>.
    assert tgt_len[9] == 6 and v["<eos>"] not in tgt[9].tolist() and v["<pad>"] not in tgt[9].tolist()
    assert src.shape == (10, 6) and torch.equal(src_len, (src != data.src_vocab["<pad>"]).sum(1))
    ids, length = data.encode_source("Go home!")
    assert data.source_tokens("Go home!") == ["go", "home", "<unk>", "<eos>"] and length.tolist() == [4]
    assert ids.shape == (1, 6)


def test_splits_train_on_the_first_pairs_and_hold_out_a_seeded_sample(pairs_file):
    data = tiny_data(pairs_file)
    all_pairs = [(tokenize(en), tokenize(fr)) for en, fr in PAIRS * 3]
    assert data.train_pairs == all_pairs[:10]
    assert len(data.val_pairs) == 5 and all(p in all_pairs[10:20] for p in data.val_pairs)
    again, other = tiny_data(pairs_file), tiny_data(pairs_file, seed=1)
    assert again.val_references == data.val_references != other.val_references
    assert data.val_references[0] == " ".join(data.val_pairs[0][1])
    everything = tiny_data(pairs_file, num_examples=None, num_val=7)
    assert len(everything.train_pairs) == 23 and len(everything.val_pairs) == 7
    with pytest.raises(DlrunError, match="no pairs after the first data.num_examples=30"):
        tiny_data(pairs_file, num_examples=30)
    assert tiny_data(pairs_file, num_examples=30, num_val=0).val_pairs == []


def test_batches_cover_the_pairs_once_per_epoch_in_a_seeded_order(pairs_file):
    data = tiny_data(pairs_file)
    data.setup(torch.device("cpu"), seed=3)
    first = [b.index for b in data.train_loader(epoch=1)]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert all(torch.equal(a, b.index) for a, b in zip(first, data.train_loader(epoch=1), strict=True))
    assert not torch.equal(torch.cat(first), torch.cat([b.index for b in data.train_loader(epoch=2)]))
    batch = next(iter(data.val_loader()))
    assert batch.index.tolist() == [0, 1, 2, 3] and torch.equal(batch.tgt, data.val_tensors[2][:4])
    assert batch.loss_denominator == batch.tgt_len.sum()  # one process: this batch's target tokens


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DlrunError) as err:
        FraEngData(tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "fra-eng" / "fra.txt") in message and FRA_ENG_URL in message and "\n" not in message
    with pytest.raises(DlrunError, match="not found; set data.path"):
        FraEngData(tmp_path, path=str(tmp_path / "nothing.txt"))


# ------------------------------------------------------------------------- loss
def test_masked_loss_ignores_padding_exactly():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    target = torch.randint(7, (3, 5))
    valid = torch.tensor([5, 2, 1])
    total, count = masked_cross_entropy(logits, target, valid)
    expected = sum(
        F.cross_entropy(logits[b, : valid[b]], target[b, : valid[b]], reduction="sum") for b in range(3)
    )
    assert count == 8 and torch.allclose(total, expected)
    changed = logits.detach().clone()
    changed[1, 2:] += 100 * torch.randn(3, 7)
    changed[2, 1:] = -50.0
    assert torch.equal(masked_cross_entropy(changed, target, valid)[0], total.detach())
    total.backward()
    assert logits.grad[1, 2:].abs().sum() == 0 and logits.grad[2, 1:].abs().sum() == 0
    assert logits.grad[0].abs().sum() > 0


def test_task_loss_is_per_token_and_aggregates_exactly(pairs_file):
    torch.manual_seed(0)
    data = tiny_data(pairs_file)
    data.setup(torch.device("cpu"))
    model = Seq2Seq(len(data.src_vocab), len(data.tgt_vocab), 8, 8, 1, 0.0)
    task = Seq2SeqTask()
    task.on_fit_start(model, FitContext(Path("."), None, data))
    batches = list(data.train_loader(epoch=1))
    results = [task.training_step(model, b) for b in batches]
    tokens = sum(float(s["tokens"]) for _, s, _ in results)
    assert tokens == float(data.train_tensors[3].sum())
    mean = sum(float(s["loss"]) for _, s, _ in results) / tokens
    sums = {"loss": sum(float(s["loss"]) for _, s, _ in results), "tokens": tokens}
    assert Seq2SeqTask.compute(sums, 10)["loss"] == pytest.approx(mean)
    loss, stats, count = results[0]
    assert count == 4 and loss.requires_grad and not stats["loss"].requires_grad
    assert float(loss.detach()) == pytest.approx(float(stats["loss"] / stats["tokens"]))
    # Teacher forcing: <bos> then the target shifted by one.
    src, src_len, tgt, tgt_len = batches[0][:4]
    bos = torch.full_like(tgt[:, :1], data.tgt_vocab["<bos>"])
    expected = masked_cross_entropy(model(src, src_len, torch.cat([bos, tgt[:, :-1]], 1)), tgt, tgt_len)
    assert torch.allclose(stats["loss"], expected[0])


def test_two_ranks_gradients_average_to_the_single_process_gradient(pairs_file):
    """DDP averages the ranks' gradients: each rank's per-token loss must be over the global batch's tokens,
    or ranks whose sentences are shorter would weigh more."""
    torch.manual_seed(0)
    model = Seq2Seq(40, 40, 8, 8, 1, 0.0)
    task = Seq2SeqTask()

    def gradients(rank, world_size):
        data = tiny_data(pairs_file, batch_size=6)
        data.setup(torch.device("cpu"), seed=1, rank=rank, world_size=world_size)
        task.bind(data)
        model.zero_grad()
        loss, _, _ = task.training_step(model, next(iter(data.train_loader(epoch=1))))
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    single = gradients(0, 1)
    ranks = [gradients(r, 2) for r in (0, 1)]
    for got0, got1, want in zip(*ranks, single, strict=True):
        torch.testing.assert_close((got0 + got1) / 2, want)


# ------------------------------------------------------------------------- BLEU
def test_bleu_is_the_books_formula():
    assert bleu("va !", "va !") == 1.0
    # p1 = 3/4, p2 = 1/3: (3/4)^(1/2) (1/3)^(1/4) = 0.658 (the book's "il est riche ." figure).
    assert bleu("il est riche .", "il est calme .") == pytest.approx(math.sqrt(3 / 4) * (1 / 3) ** 0.25)
    assert bleu("il est riche .", "il est calme .") == pytest.approx(0.658, abs=5e-4)
    assert bleu("je suis en retard ?", "je suis chez moi .") == pytest.approx(0.447, abs=5e-4)
    # Brevity penalty exp(1 - 5/2), every n-gram matched.
    assert bleu("je suis", "je suis chez moi .") == pytest.approx(math.exp(-1.5))
    # Matches are clipped by the reference counts; a missing order zeroes the score.
    assert bleu("le le le", "le chat") == 0.0
    assert bleu("le le le chat", "le chat le", k=1) == pytest.approx((3 / 4) ** 0.5)  # no penalty: longer
    assert bleu("a b c d", "a b c d e", k=3) == pytest.approx(math.exp(1 - 5 / 4))
    assert bleu("", "va !") == 0.0
    assert bleu("va", "va") == 1.0 and bleu("va", "va !") == pytest.approx(math.exp(-1))  # no bigram to score


# -------------------------------------------------------------------- attention
def test_masked_keys_get_zero_weight():
    scores = torch.randn(2, 3, 5)
    weights = masked_softmax(scores, torch.tensor([2, 4]))
    assert torch.all(weights[0, :, 2:] == 0) and torch.all(weights[1, :, 4:] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    causal = masked_softmax(scores, torch.arange(1, 4).expand(2, 3))
    assert torch.all(causal.triu(1)[..., :3] == 0) and torch.all(causal[..., 3:] == 0)

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    k2, v2 = k.clone(), v.clone()
    k2[0, 2:], v2[0, 2:], k2[1, 4:], v2[1, 4:] = 9.0, -9.0, 7.0, 3.0
    lens = torch.tensor([2, 4])
    for attention in (AdditiveAttention(8, 8, 6).eval(), MultiHeadAttention(8, 2).eval()):
        out = attention(q, k, v, lens)
        weights = attention.attention_weights
        torch.testing.assert_close(attention(q, k2, v2, lens), out)
        assert torch.all(weights[0, ..., 2:] == 0) and torch.all(weights[1, ..., 4:] == 0)
    assert weights.shape == (2, 2, 3, 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_softmax_under_mixed_precision(dtype):
    scores = torch.randn(2, 3, 5, dtype=dtype)
    weights = masked_softmax(scores, torch.tensor([2, 4]))
    assert weights.dtype == dtype and torch.all(weights[0, :, 2:] == 0)
    model = Transformer(11, 9, 16, 32, 4, 2, 0.0).eval()
    with torch.autocast("cpu", dtype=dtype), torch.no_grad():  # -1e6 must not overflow float16
        logits = model(torch.randint(11, (2, 6)), torch.tensor([6, 2]), torch.randint(9, (2, 4)))
    assert torch.isfinite(logits).all()


def make_models(src_vocab=11, tgt_vocab=9):
    torch.manual_seed(0)
    return [
        Seq2Seq(src_vocab, tgt_vocab, 8, 16, 2, 0.0),
        Bahdanau(src_vocab, tgt_vocab, 8, 16, 2, 0.0),
        Transformer(src_vocab, tgt_vocab, 16, 32, 4, 2, 0.0),
        Transformer(src_vocab, tgt_vocab, 16, 32, 4, 2, 0.0, impl="torch"),
    ]


@pytest.mark.parametrize("index", range(4), ids=["seq2seq", "bahdanau", "transformer", "transformer_torch"])
def test_step_by_step_decoding_equals_teacher_forcing(index):
    model = make_models()[index].eval()
    src, src_len = torch.randint(11, (3, 6)), torch.tensor([6, 3, 1])
    tgt_in = torch.randint(9, (3, 5))
    with torch.no_grad():
        full = model(src, src_len, tgt_in)
        state, steps = model.encode(src, src_len), []
        for t in range(5):
            logits, state = model.decode(tgt_in[:, t : t + 1], state)
            steps.append(logits)
    assert full.shape == (3, 5, 9)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # The source's padding changes nothing.
    src2 = src.clone()
    src2[1, 3:], src2[2, 1:] = 4, 7
    if index >= 2:  # (the GRU encoders read the padding, as the book's)
        with torch.no_grad():
            torch.testing.assert_close(model(src2, src_len, tgt_in), full, atol=1e-5, rtol=1e-5)


def test_attention_models_expose_their_weights():
    seq2seq, bahdanau, scratch, torch_impl = [m.eval() for m in make_models()]
    src, src_len, tgt_in = torch.randint(11, (2, 6)), torch.tensor([6, 2]), torch.randint(9, (2, 4))
    with torch.no_grad():
        for model in (seq2seq, bahdanau, scratch, torch_impl):
            model(src, src_len, tgt_in)
    assert seq2seq.attention_weights is None and torch_impl.attention_weights is None
    (decoder,) = bahdanau.attention_weights["decoder"]
    assert decoder.shape == (2, 1, 4, 6) and torch.all(decoder[1, ..., 2:] == 0)
    weights = scratch.attention_weights
    assert [w.shape for w in weights["decoder_cross"]] == [(2, 4, 4, 6)] * 2
    assert [w.shape for w in weights["encoder"]] == [(2, 4, 6, 6)] * 2
    assert torch.all(weights["decoder_self"][0].triu(1) == 0)  # causal
    assert torch.all(weights["decoder_cross"][1][1, ..., 2:] == 0)


def test_scratch_transformer_and_nn_transformer_agree_with_the_same_weights():
    torch.manual_seed(0)
    scratch = Transformer(11, 9, 16, 32, 4, 2, dropout=0.0)
    builtin = Transformer(11, 9, 16, 32, 4, 2, dropout=0.0, impl="torch")
    assert sum(p.numel() for p in scratch.parameters()) == sum(p.numel() for p in builtin.parameters())
    copy_scratch_weights(builtin, scratch)
    src, src_len, tgt_in = torch.randint(11, (3, 7)), torch.tensor([7, 4, 1]), torch.randint(9, (3, 5))
    out_s, out_b = scratch(src, src_len, tgt_in), builtin(src, src_len, tgt_in)  # training mode
    torch.testing.assert_close(out_b, out_s, atol=1e-5, rtol=1e-5)
    out_s.square().sum().backward()
    out_b.square().sum().backward()
    torch.testing.assert_close(builtin.dense.weight.grad, scratch.dense.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        builtin.src_embedding.weight.grad, scratch.src_embedding.weight.grad, atol=1e-5, rtol=1e-4
    )
    with torch.inference_mode():
        torch.testing.assert_close(
            builtin.eval()(src, src_len, tgt_in), scratch.eval()(src, src_len, tgt_in), atol=1e-5, rtol=1e-5
        )
    with pytest.raises(DlrunError, match="model.impl"):
        Transformer(11, 9, impl="keras")


# ---------------------------------------------------------------------- decoding
@pytest.mark.parametrize("index", range(3), ids=["seq2seq", "bahdanau", "transformer"])
def test_beam_size_one_is_greedy(index):
    model = make_models()[index].eval()
    torch.manual_seed(1)
    src, src_len = torch.randint(4, 11, (6, 5)), torch.tensor([5, 5, 4, 3, 2, 1])
    batch = greedy(model, src, src_len, bos=2, eos=3, max_len=7)
    for i in range(6):
        one = beam_search(model, src[i : i + 1], src_len[i : i + 1], 2, 3, 1, 7, beam_size=1)
        assert one == batch[i] == greedy(model, src[i : i + 1], src_len[i : i + 1], 2, 3, 7)[0]
        assert 3 not in one and len(one) <= 7


def sequence_log_prob(model, src, src_len, tokens, bos=2):
    with torch.no_grad():
        logits = model(src, src_len, torch.tensor([[bos, *tokens[:-1]]]))
    return float(F.log_softmax(logits[0], -1).gather(1, torch.tensor(tokens)[:, None]).sum())


def test_a_beam_as_wide_as_every_sequence_finds_the_most_likely_one():
    torch.manual_seed(0)
    model = Bahdanau(7, 5, 4, 8, 1, 0.0).eval()
    src, src_len = torch.randint(7, (1, 4)), torch.tensor([4])
    eos, max_len = 3, 3
    candidates = []  # every output: ends at <eos>, or max_len tokens without it
    for length in range(1, max_len + 1):
        for seq in itertools.product(range(5), repeat=length):
            if (eos in seq[:-1]) or (length < max_len and seq[-1] != eos):
                continue
            candidates.append(list(seq))
    best = max(candidates, key=lambda s: sequence_log_prob(model, src, src_len, s))
    found = beam_search(model, src, src_len, 2, eos, 1, max_len, beam_size=5**3, length_penalty=0.0)
    assert found == (best[:-1] if best[-1] == eos else best)
    narrow = beam_search(model, src, src_len, 2, eos, 1, max_len, beam_size=3)
    assert len(narrow) <= max_len and eos not in narrow


def test_validation_reports_bleu_of_the_held_out_pairs(pairs_file):
    torch.manual_seed(0)
    data = tiny_data(pairs_file)
    data.setup(torch.device("cpu"))
    model = Transformer(len(data.src_vocab), len(data.tgt_vocab), 16, 32, 4, 1, 0.0).eval()
    task = Seq2SeqTask(beam_size=2)
    task.on_fit_start(model, FitContext(Path("."), None, data))
    batch = next(iter(data.val_loader()))
    _, stats, count = task.validation_step(model, batch)
    translations, _ = task.translate(model, batch[0], batch[1])
    expected = sum(bleu(t, r) for t, r in zip(translations, data.val_references[:4], strict=True))
    assert count == 4 and float(stats["bleu"]) == pytest.approx(expected)
    with pytest.raises(DlrunError, match="needs sentence pairs"):
        task.on_fit_start(model, FitContext(Path("."), None, object()))
    with pytest.raises(DlrunError, match="needs an encoder-decoder"):
        task.on_fit_start(torch.nn.Linear(2, 2), FitContext(Path("."), None, data))


def test_report_writes_translations_heatmaps_and_tensorboard_images(pairs_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    data = tiny_data(pairs_file)
    model = Bahdanau(len(data.src_vocab), len(data.tgt_vocab), 8, 8, 1, 0.0)
    task = Seq2SeqTask(examples=[["Go.", "Va !"]])
    task.on_fit_start(model, FitContext(Path("."), None, data))
    logger = TensorBoardLogger(tmp_path / "tb")
    (row,) = task.report(model, task.examples, tmp_path / "run", logger)
    logger.close()
    assert (
        row["source"] == "go ."
        and row["reference"] == "va !"
        and row["bleu"] == bleu(row["translation"], "va !")
    )
    lines = (tmp_path / "run" / "translations.tsv").read_text().splitlines()
    assert lines[1].split("\t")[:3] == ["go .", row["translation"], "va !"]
    assert (tmp_path / "run" / "attention" / "0_decoder.png").stat().st_size > 1000
    assert model.training  # report leaves the mode as it found it
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "attention/0_decoder" in events.Tags()["images"]


# --------------------------------------------------------------------------- CLI
def test_each_d2l_experiment_runs_through_the_cli(pairs_file, tmp_path):
    run_cli(
        [
            "-m",
            "experiment=d2l/seq2seq,d2l/bahdanau,d2l/transformer",
            "data=fra_eng",  # what the experiments pick: the sweep's base config must know data.path
            "task=seq2seq",
            f"data.path={pairs_file}",
            *TINY,
            "trainer.fast_dev_run=true",
            "task.attention_heatmaps=false",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=tmp_path,
    )
    for job, name in enumerate(["seq2seq", "bahdanau", "transformer"]):
        run_dir = tmp_path / "sweep" / str(job)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["monitor"] == "val/bleu", name
        assert {"train/loss", "val/loss", "val/bleu"} <= set(metrics["final"]), name
        rows = (run_dir / "translations.tsv").read_text().splitlines()
        assert [r.split("\t")[0] for r in rows[1:]] == ["go .", "i lost .", "he's calm .", "i'm home ."]


def test_cli_trains_then_translates_from_the_checkpoint(pairs_file, tmp_path):
    common = ["experiment=d2l/bahdanau", f"data.path={pairs_file}", *TINY, "model.hidden_size=16"]
    proc = run_cli(
        [*common, "trainer.max_epochs=2", 'task.examples=[["go .","va !"]]', f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
    )
    run_dir = tmp_path / "run"
    assert (run_dir / "best.ckpt").is_file() and (run_dir / "attention" / "0_decoder.png").is_file()
    assert "go . => " in proc.stderr and ", bleu " in proc.stderr
    proc = run_cli(
        [*common, "mode=translate", f"ckpt_path={run_dir}", 'task.sentences=["I lost.","Go home!"]',
         "task.beam_size=2", f"hydra.run.dir={tmp_path}/translate"],
        cwd=tmp_path,
    )  # fmt: skip
    rows = (tmp_path / "translate" / "translations.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["i lost .", "go home !"]
    assert f"i lost . => {rows[1].split(chr(9))[1]}" in proc.stderr
    assert (tmp_path / "translate" / "attention" / "1_decoder.png").is_file()
    # other data options build another vocabulary: a clear error, not translations from shuffled token ids
    other = [*common, "mode=translate", f"ckpt_path={run_dir}", "data.min_freq=4"]
    proc = run_cli(other, tmp_path, check=False)
    assert proc.returncode == 2
    assert "was trained with another src_vocab" in proc.stderr and ".hydra/config.yaml" in proc.stderr


def test_a_checkpoint_trained_on_another_vocabulary_is_refused(pairs_file, tmp_path):
    from dlrun.run import check_data_state

    data = tiny_data(pairs_file)
    saved = data.checkpoint_state()
    check_data_state(data, saved, tmp_path / "x.ckpt")  # the same vocabularies: fine
    check_data_state(data, None, tmp_path / "x.ckpt")  # checkpoints from before vocabularies were saved
    swapped = saved["tgt_vocab"][:]
    swapped[-1], swapped[-2] = swapped[-2], swapped[-1]  # same size, two tokens trade places
    with pytest.raises(DlrunError, match="trained with another tgt_vocab"):
        check_data_state(data, saved | {"tgt_vocab": swapped}, tmp_path / "x.ckpt")


def test_translate_mode_needs_a_checkpoint(compose_cfg, pairs_file):
    with pytest.raises(DlrunError, match="mode=translate needs ckpt_path="):
        run(compose_cfg(["experiment=d2l/seq2seq", f"data.path={pairs_file}", "mode=translate"]))
