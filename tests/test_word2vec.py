"""word2vec (issue 17): skip-gram pairs, masked BCE, nearest words and analogies, GloVe text files."""

import math
import random
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from dlrun.data.embeddings import (
    TokenEmbedding,
    analogy,
    embedding_layer,
    nearest,
    read_vectors,
    write_vectors,
)
from dlrun.data.word2vec import PTBWord2VecData, Word2VecData
from dlrun.errors import DlrunError
from dlrun.models.word2vec import SkipGram
from dlrun.tasks.word2vec import Word2VecTask, masked_bce

WORDS = "the cat sat on a mat while the dog ran to the red ball and a bird sang".split()


@pytest.fixture
def corpus(tmp_path) -> Path:
    rng = random.Random(0)
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(300)]
    path = tmp_path / "ptb" / "ptb.train.txt"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def small(path, **kwargs) -> Word2VecData:
    data = Word2VecData(path, **({"batch_size": 16, "min_freq": 2} | kwargs))
    data.setup(torch.device("cpu"), seed=3)
    return data


def test_pairs_follow_the_book(corpus):
    data = small(corpus, subsample_t=1.0)  # t large: sqrt(t N / c) > 1 keeps every word
    sentences = [line.split() for line in corpus.read_text().split("\n")]
    draw = data.epoch_draw(1)
    assert len(draw) == sum(len(s) for s in sentences if len(s) >= 2)  # every word of a 2+ word sentence
    assert 1 <= int(draw.num_contexts.min()) and int(draw.num_contexts.max()) <= 10
    counts = data.counts.double()
    for c in range(0, len(draw), 37):
        n = int(draw.num_contexts[c])
        contexts = set(draw.contexts[c, :n].tolist())
        noise = draw.negatives[c, : 5 * n].tolist()
        assert not contexts & set(noise) and 0 not in noise  # no context, no <unk> among the negatives
    # centre 0 is the first word of the first sentence: its contexts are the next n words, in order
    first = next(s for s in sentences if len(s) >= 2)
    n = int(draw.num_contexts[0])
    assert data.vocab[first[0]] == int(draw.centers[0])
    assert draw.contexts[0, :n].tolist() == data.vocab[first[1 : 1 + n]]
    assert torch.all(draw.contexts[0, n:] == 0)
    # negatives ∝ count^0.75
    noise = data.sample_noise((200_000,), torch.Generator().manual_seed(0))
    freq = torch.bincount(noise, minlength=len(data.vocab)).double() / len(noise)
    expected = counts**0.75 / (counts**0.75).sum()
    assert torch.allclose(freq, expected, atol=0.005) and freq[0] == 0


def test_subsampling_drops_frequent_words(corpus):
    data = small(corpus, subsample_t=1e-2)
    kept, _ = data.subsample(torch.Generator().manual_seed(0))
    the = data.vocab["the"]
    n, c = len(data.ids), int(data.counts[the])
    assert int((kept == the).sum()) == pytest.approx(c * math.sqrt(1e-2 * n / c), rel=0.25)


def test_batches_are_padded_masked_and_labelled(corpus):
    data = small(corpus)
    centers, values, mask, labels = next(iter(data.train_loader(1)))
    draw = data.epoch_draw(1)
    n = mask.sum(1) / 6
    assert values.shape[1] == 6 * int(n.max()) and torch.equal(labels.sum(1), n)
    assert torch.all(values[mask == 0] == 0) and torch.all(labels <= mask)
    index = next(iter(data.train_sampler(len(draw), 1, 0)))
    assert torch.equal(centers[:, 0], draw.centers[index].long())
    k = int(n[0])
    assert values[0, :k].tolist() == draw.contexts[index[0], :k].tolist()
    assert values[0, k : 6 * k].tolist() == draw.negatives[index[0], : 5 * k].tolist()


@pytest.mark.parametrize("redraw", [False, True])
def test_batches_come_from_seed_and_epoch_and_resume_mid_epoch(corpus, redraw):
    data = small(corpus, redraw=redraw)
    first = list(data.train_loader(2))
    again = small(corpus, redraw=redraw)  # a fresh process
    resumed = list(again.train_loader(2, skip=3))
    assert len(again.train_loader(2, skip=3)) == len(first)
    assert all(
        torch.equal(a, b) for x, y in zip(resumed, first[3:], strict=True) for a, b in zip(x, y, strict=True)
    )
    other_epoch = list(data.train_loader(3))
    assert not torch.equal(other_epoch[0][0], first[0][0])  # reshuffled
    draws = [data.epoch_draw(e).negatives for e in (2, 3)]
    assert torch.equal(*draws) is not redraw  # the book's one draw, or a fresh one per epoch


def test_masked_bce_against_a_hand_computation():
    scores = torch.tensor([[2.0, -1.0, 0.5, 9.0], [0.0, 3.0, -7.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    first = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 0)) / 3  # 9.0 is padding
    second = (bce(0.0, 1) + bce(3.0, 1) + bce(-7.0, 0) + bce(1.0, 0)) / 4
    assert masked_bce(scores, labels, mask).tolist() == pytest.approx([first, second], rel=1e-6)
    model = SkipGram(10, 4)
    batch = (torch.tensor([[1], [2]]), torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]]), mask, labels)
    loss, stats, count = Word2VecTask().step(model, batch)
    hand = model.center.weight[[1, 2]][:, None] @ model.context(batch[1]).transpose(1, 2)
    assert count == 2 and loss.item() == pytest.approx(masked_bce(hand[:, 0], labels, mask).mean().item())
    assert Word2VecTask.compute({"loss": stats["loss"].item()}, count)["loss"] == pytest.approx(loss.item())


def hand_table() -> TokenEmbedding:
    words = ["man", "woman", "king", "queen", "son", "daughter", "apple"]
    vectors = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0], [1, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, -1.0]]
    )
    return TokenEmbedding(words, vectors)


def test_nearest_words_and_analogies_on_hand_made_vectors():
    table = hand_table()
    assert len(table) == 8 and table.idx_to_token[0] == "<unk>"
    found = nearest(table, "king", k=2)
    assert [w for w, _ in found] == ["queen", "man"]  # cos 2/sqrt6 = 0.816, then 1/sqrt2 = 0.707
    assert [c for _, c in found] == pytest.approx([2 / math.sqrt(6), 1 / math.sqrt(2)], rel=1e-4)
    assert analogy(table, "man", "woman", "son") == "daughter"
    assert analogy(table, "man", "woman", "king") == "queen"
    with pytest.raises(DlrunError, match="'dragon' is not in the vocabulary"):
        nearest(table, "dragon")


def test_glove_text_round_trip_and_pretrained_layer(tmp_path):
    table = hand_table()
    path = write_vectors(tmp_path / "embeddings.txt", table.idx_to_token, table.idx_to_vec)
    assert path.read_text().splitlines()[0].split()[0] == "man"  # <unk> is not written
    back = read_vectors(path)
    assert back.idx_to_token == table.idx_to_token and torch.allclose(back.idx_to_vec, table.idx_to_vec)
    fasttext = tmp_path / "vec.txt"  # fastText's header line, a folder as the book's zips unpack
    fasttext.write_text("7 4\n" + path.read_text())
    assert torch.equal(read_vectors(tmp_path).idx_to_vec, back.idx_to_vec)
    layer = embedding_layer(path, ["<unk>", "queen", "zebra"], freeze=True)
    assert not layer.weight.requires_grad
    assert layer.weight.tolist() == [[0.0] * 4, [1, 1, 1, 0], [0.0] * 4]
    assert embedding_layer(path, ["man"], freeze=False).weight.requires_grad
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(DlrunError, match="bad.txt:2: 2 numbers"):
        read_vectors(bad)
    with pytest.raises(DlrunError, match="glove.6B.50d.zip"):
        read_vectors(tmp_path / "missing.txt")


def test_pretrained_embeddings_start_the_centre_table(corpus, tmp_path):
    data = small(corpus)
    vectors = torch.randn(len(data.vocab), 8)
    path = write_vectors(tmp_path / "e.txt", data.vocab.idx_to_token, vectors)
    loaded = Word2VecData(
        corpus, batch_size=16, min_freq=2, pretrained_embeddings=str(path), freeze_embeddings=True
    )
    model = SkipGram(embed_size=8, **loaded.model_kwargs)
    assert (
        torch.allclose(model.center.weight[1:], vectors[1:], atol=1e-5)
        and not model.center.weight.requires_grad
    )
    with pytest.raises(DlrunError, match="model.embed_size=8"):
        SkipGram(embed_size=100, **loaded.model_kwargs)


def test_missing_ptb_and_a_tiny_vocabulary_say_what_to_do(tmp_path):
    with pytest.raises(DlrunError, match="ptb.zip"):
        PTBWord2VecData(tmp_path)
    (tmp_path / "one.txt").write_text("a a a b\n")
    with pytest.raises(DlrunError, match="lower data.min_freq"):
        Word2VecData(tmp_path / "one.txt", min_freq=2)


def test_cli_trains_exports_and_predicts(corpus, tmp_path):
    root = corpus.parent.parent
    args = [
        "experiment=d2l/word2vec",
        f"paths.data_dir={root}",
        "data.min_freq=2",
        "data.batch_size=64",
        "model.embed_size=8",
        "trainer.max_epochs=2",
        "trainer.progress_bar=false",
        "logger=none",
        "task.query=[cat]",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = run_cli(args, cwd=tmp_path)
    assert "nearest to 'cat':" in proc.stdout + proc.stderr
    vectors = read_vectors(tmp_path / "run" / "embeddings.txt")
    assert len(vectors) == len(set(WORDS)) + 1 and vectors.idx_to_vec.shape[1] == 8
    predict = [a for a in args if not a.startswith(("hydra", "task.query"))] + [
        "mode=predict",
        f"ckpt_path={tmp_path / 'run' / 'last.ckpt'}",
        "task.query=[dog, cat]",
        "task.analogy=[cat, dog, red]",
        f"hydra.run.dir={tmp_path / 'pred'}",
    ]
    run_cli(predict, cwd=tmp_path)
    rows = (tmp_path / "pred" / "nearest.tsv").read_text().splitlines()
    assert rows[0] == "word\trank\tneighbour\tcosine" and len(rows) == 1 + 2 * 3
    answer = (tmp_path / "pred" / "analogies.tsv").read_text().splitlines()[1].split("\t")
    assert (
        answer[:3] == ["cat", "dog", "red"] and answer[3] in WORDS and answer[3] not in ("cat", "dog", "red")
    )
    proc = run_cli(
        [*predict[:-3], "task.query=[dragon]", f"hydra.run.dir={tmp_path / 'p2'}"], cwd=tmp_path, check=False
    )
    assert proc.returncode != 0 and "'dragon' is not in the vocabulary" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # a corpus of one word more builds another vocabulary than the checkpoint's: refused in one line
    (tmp_path / "other" / "ptb").mkdir(parents=True)
    (tmp_path / "other" / "ptb" / "ptb.train.txt").write_text(corpus.read_text() + "zebra zebra\n")
    other = [f"paths.data_dir={tmp_path / 'other'}" if a.startswith("paths.") else a for a in predict[:-3]]
    proc = run_cli([*other, f"hydra.run.dir={tmp_path / 'p3'}"], cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "was trained with another vocab" in out and "Traceback" not in out


def test_out_of_range_options_give_one_line(corpus):
    with pytest.raises(DlrunError, match="data.num_noise_words=0 must be >= 1"):
        PTBWord2VecData(corpus.parent.parent, num_noise_words=0)
