"""BERT pretraining (issue 17): NSP/MLM pairs, the encoder, the masked losses, the data sources, the CLI."""

import json
import math
import random
import zipfile

import pytest
import torch
from conftest import run_cli

from dlrun.data.bert import (
    PTBParagraphsData,
    TextParagraphsData,
    TimeMachineParagraphsData,
    WikiText2Data,
    mask_tokens,
    read_wiki,
    tokens_and_segments,
)
from dlrun.data.text import Vocab
from dlrun.errors import DlrunError
from dlrun.models.bert import BERTModel
from dlrun.tasks.bert import BertPretrainTask

WORDS = "the time traveller spoke of a machine that moved through the ages and back again to us".split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(3, 9)))


@pytest.fixture
def text_file(tmp_path):
    rng = random.Random(0)
    paragraphs = [". ".join(sentence(rng) for _ in range(rng.randint(2, 5))) + "." for _ in range(40)]
    path = tmp_path / "story.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def small(path, **kwargs):
    data = TextParagraphsData(path, **({"batch_size": 8, "max_len": 24, "min_freq": 1} | kwargs))
    data.setup(torch.device("cpu"), seed=1)
    return data


def test_pairs_follow_the_book(text_file):
    tokens, segments = tokens_and_segments(["a", "b"], ["c"])
    assert tokens == ["<cls>", "a", "b", "<sep>", "c", "<sep>"] and segments == [0, 0, 0, 0, 1, 1]
    data = small(text_file)
    vocab, ex = data.vocab, data.train_examples
    assert vocab.idx_to_token[:5] == ["<unk>", "<pad>", "<mask>", "<cls>", "<sep>"]
    assert 0.35 < ex.is_next.float().mean() < 0.65
    assert ex.positions.shape[1] == round(24 * 0.15) == 4
    for i in range(len(ex)):
        n = int(ex.valid_lens[i])
        assert n <= 24 and ex.tokens[i, 0] == vocab["<cls>"] and torch.all(ex.tokens[i, n:] == vocab["<pad>"])
        k = int(ex.weights[i].sum())
        assert k == max(1, round(n * 0.15))
        chosen = ex.positions[i, :k]
        assert torch.all(chosen[1:] > chosen[:-1]) and 0 < chosen.min() and chosen.max() < n - 1
        assert not set(ex.labels[i, :k].tolist()) & {vocab["<cls>"], vocab["<sep>"]}  # never predicted
        assert torch.all(ex.positions[i, k:] == 0) and torch.all(ex.labels[i, k:] == 0)


def test_masking_is_80_10_10():
    vocab = Vocab([f"w{i}" for i in range(50)] * 5, reserved_tokens=["<pad>", "<mask>", "<cls>", "<sep>"])
    tokens = ["<cls>", *[f"w{i}" for i in range(20)], "<sep>"]
    rng = random.Random(0)
    masked = kept = other = 0
    for _ in range(2000):
        ids, positions, labels = mask_tokens(tokens, vocab, rng)
        assert len(positions) == round(22 * 0.15) and 0 not in positions and 21 not in positions
        assert labels == vocab[[tokens[p] for p in positions]]
        for p in positions:
            masked += ids[p] == vocab["<mask>"]
            kept += ids[p] == vocab[tokens[p]]
            other += ids[p] not in (vocab["<mask>"], vocab[tokens[p]])
    total = masked + kept + other
    assert masked / total == pytest.approx(0.8, abs=0.02)
    assert kept / total == pytest.approx(0.1, abs=0.02) and other / total == pytest.approx(0.1, abs=0.02)


def test_draws_come_from_the_seed_and_order_from_seed_and_epoch(text_file):
    first = list(small(text_file).train_loader(2))
    again = small(text_file)
    resumed = list(again.train_loader(2, skip=2))
    assert all(
        torch.equal(a, b) for x, y in zip(resumed, first[2:], strict=True) for a, b in zip(x, y, strict=True)
    )
    assert not torch.equal(list(again.train_loader(3))[0][0], first[0][0])


def test_position_embedding_learns_and_padding_is_ignored():
    model = BERTModel(30, hidden_size=16, ffn_hidden_size=32, num_heads=2, num_layers=2, dropout=0.0)
    tokens = torch.randint(5, 30, (3, 10))
    segments = torch.zeros(3, 10, dtype=torch.long)
    valid = torch.tensor([10, 6, 4])
    positions = torch.tensor([[1, 2], [3, 5], [1, 0]])
    encoded, mlm, nsp = model(tokens, segments, valid, positions)
    assert encoded.shape == (3, 10, 16) and mlm.shape == (3, 2, 30) and nsp.shape == (3, 2)
    (mlm.sum() + nsp.sum()).backward()
    assert model.encoder.pos_embedding.grad is not None and model.encoder.pos_embedding.grad.abs().sum() > 0
    assert any(p is model.encoder.pos_embedding for p in model.parameters())
    changed = tokens.clone()
    changed[1, 6:] = 7  # beyond row 1's valid length: its first 6 outputs do not move
    again, _, _ = model(changed, segments, valid)
    assert torch.allclose(again[1, :6], encoded[1, :6], atol=1e-5)
    with pytest.raises(DlrunError, match="model.max_len=8"):
        BERTModel(30, 16, 32, 2, 1, 0.0, max_len=8)(tokens, segments)


def test_losses_against_a_hand_computation():
    class Fixed(torch.nn.Module):
        def __init__(self, mlm, nsp):
            super().__init__()
            self.mlm, self.nsp = mlm, nsp

        def forward(self, tokens, segments, valid_lens, positions):
            return None, self.mlm, self.nsp

    mlm = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], [[0.5, 0.5, 3.0], [1.0, 2.0, 3.0]]])
    nsp = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    labels = torch.tensor([[0, 1], [2, 0]])
    weights = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the last slot is padding
    is_next = torch.tensor([0, 1])

    def ce(logits, label):
        return -logits[label] + math.log(sum(math.exp(x) for x in logits))

    rows = [
        (mlm[0, 0].tolist(), 0),
        (mlm[0, 1].tolist(), 1),
        (mlm[1, 0].tolist(), 2),
        (mlm[1, 1].tolist(), 0),
    ]
    per_slot = [ce(x, y) for x, y in rows]
    masked = sum(per_slot[:3]) / 3
    unmasked = sum(per_slot) / 4  # the book's: padding counted
    nsp_loss = (ce([1.0, -1.0], 0) + ce([0.0, 2.0], 1)) / 2
    batch = (torch.zeros(2, 4, dtype=torch.long),) * 3 + (
        torch.zeros(2, 2, dtype=torch.long),
        weights,
        labels,
        is_next,
    )
    loss, stats, count = BertPretrainTask().step(Fixed(mlm, nsp), batch)
    assert count == 2 and loss.item() == pytest.approx(masked + nsp_loss, rel=1e-6)
    metrics = BertPretrainTask.compute({k: v.item() for k, v in stats.items()}, count)
    assert metrics["mlm_loss"] == pytest.approx(masked, rel=1e-6)
    assert metrics["mlm_loss_unmasked"] == pytest.approx(unmasked, rel=1e-6)
    assert metrics["nsp_loss"] == pytest.approx(nsp_loss, rel=1e-6) and metrics["nsp_acc"] == 1.0


def test_wikitext2_layout_and_ptb_paragraphs(tmp_path):
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    lines = [" = Heading = ", " The Cat sat . It ran away . Then it slept ", " one sentence only ", ""]
    (folder / "wiki.train.tokens").write_text("\n".join(lines * 3))
    (folder / "wiki.valid.tokens").write_text(" A b . C d \n")
    assert read_wiki(folder / "wiki.train.tokens")[0] == [
        ["the", "cat", "sat"],
        ["it", "ran", "away"],
        ["then", "it", "slept"],
    ]
    data = WikiText2Data(tmp_path, download=False, batch_size=4, max_len=16, min_freq=1)
    assert len(data.train_paragraphs) == 3 and data.val_paragraphs == [[["a", "b"], ["c", "d"]]]
    data.setup(torch.device("cpu"), seed=0)
    assert len(data.train_examples) == 6 and len(data.val_examples) == 1
    with pytest.raises(DlrunError, match="wikitext-2-v1.zip"):
        WikiText2Data(tmp_path / "nowhere", download=False)
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text("".join(f" w{i} x y \n" for i in range(11)))
    ptb = PTBParagraphsData(tmp_path, sentences_per_paragraph=5, min_freq=1)
    assert [len(p) for p in ptb.train_paragraphs] == [5, 5]  # the 11th sentence alone is no paragraph


def test_a_text_without_two_sentence_paragraphs_says_so(tmp_path):
    path = tmp_path / "flat.txt"
    path.write_text("one sentence\n\nanother one\n")
    with pytest.raises(DlrunError, match="no paragraph of two or more sentences"):
        TextParagraphsData(path)


def test_wikitext2_zip_unpacks_where_the_book_puts_it(tmp_path, monkeypatch):
    import dlrun.data.bert as bert

    def fake_fetch(url, path, sha):
        assert url == bert.WIKITEXT2_URL and sha == bert.WIKITEXT2_SHA1
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("wikitext-2/wiki.train.tokens", " a b . c d \n e f . g h \n")
        return path

    monkeypatch.setattr(bert, "fetch", fake_fetch)
    data = WikiText2Data(tmp_path, min_freq=1)
    assert len(data.train_paragraphs) == 2


def test_cli_pretrains_and_logs_both_losses(text_file, tmp_path):
    args = [
        "experiment=d2l/bert_pretrain",
        "data=paragraphs",
        f"data.path={text_file}",
        "data.batch_size=16",
        "data.max_len=24",
        "data.min_freq=1",
        "model.hidden_size=16",
        "model.ffn_hidden_size=32",
        "trainer.max_steps=3",
        "trainer.progress_bar=false",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    run_cli(args, cwd=tmp_path)
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    for name in ("train/mlm_loss", "train/nsp_loss", "train/mlm_loss_unmasked", "val/nsp_acc", "val/loss"):
        assert math.isfinite(final[name]), name
    assert final["train/loss"] == pytest.approx(final["train/mlm_loss"] + final["train/nsp_loss"], rel=1e-5)
    assert final["train/mlm_loss"] > 0 and final["train/nsp_loss"] > 0


def test_out_of_range_options_give_one_line(text_file):
    with pytest.raises(DlrunError, match="data.max_len=2 must be >= 5"):
        TextParagraphsData(text_file, max_len=2)


BOOK_LIKE = """The Time Machine, by H. G. Wells [1898]




I


The Time Traveller (for so it will be convenient to speak
of him) was expounding a recondite matter to us. His grey eyes shone and
twinkled.

'You must follow me carefully. I shall have to controvert one or two
ideas--almost universally accepted.'

'Is not that rather a large thing to expect us to begin upon?'
said Filby, an argumentative person with red hair.
"""


def test_the_time_machine_paragraphs_are_blank_line_blocks(tmp_path):
    (tmp_path / "timemachine.txt").write_text(BOOK_LIKE)
    data = TimeMachineParagraphsData(tmp_path, download=False, min_freq=1, val_fraction=0.0)
    title, traveller, follow, filby = data.train_paragraphs  # the heading "I" drops out
    assert filby[1][:2] == ["said", "filby"]  # the rule's limit: "?' said Filby" starts a sentence
    assert len(title) == 3  # "h." and "g." end sentences: the title is no real pair, but harmless
    assert (
        traveller[0][-4:] == ["matter", "to", "us", "."]
        and traveller[1] == "his grey eyes shone and twinkled .".split()
    )
    assert follow[0] == ["'", "you", "must", "follow", "me", "carefully", "."]  # a hard-wrapped line joins
    assert follow[1][-5:] == ["almost", "universally", "accepted", ".", "'"] and "--" in follow[1]
    with pytest.raises(DlrunError, match="The Time Machine not found"):
        TimeMachineParagraphsData(tmp_path / "nowhere", download=False)


def test_bert_pretrain_on_a_text_without_two_sentence_paragraphs_says_so_in_one_line(tmp_path):
    (tmp_path / "timemachine.txt").write_text("I\n\nThe Time Traveller spoke.\n\n'Quite so,' said he\n")
    args = ["experiment=d2l/bert_pretrain", f"paths.data_dir={tmp_path}", "logger=none"]
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    lines = [line for line in out.splitlines() if "no paragraph of two or more sentences" in line]
    assert len(lines) == 1 and "timemachine.txt" in lines[0] and "blank lines" in lines[0]


def test_a_checkpoint_of_another_vocabulary_is_refused(text_file, tmp_path):
    from dlrun.run import check_data_state

    saved = TextParagraphsData(text_file, min_freq=1).checkpoint_state()
    check_data_state(TextParagraphsData(text_file, min_freq=1), saved, tmp_path / "x.ckpt")
    with pytest.raises(DlrunError, match=r"x.ckpt was trained with another vocab \(\d+ tokens"):
        check_data_state(TextParagraphsData(text_file, min_freq=50), saved, tmp_path / "x.ckpt")
