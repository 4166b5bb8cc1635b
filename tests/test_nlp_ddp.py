"""word2vec and BERT pretraining under torchrun (issue 17): two gloo processes train as one process with the
same global batch, the metrics are summed over both ranks' shards, and rank 0 alone writes the run's files."""

import json
import random

import pytest
import torch
from test_ddp import single_run, torchrun, weights

COMMON = ["trainer.device=cpu", "trainer.progress_bar=false", "trainer.curves=false", "seed=0"]
WORDS = "the cat sat on a mat while the dog ran to the red ball and a bird sang".split()


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def compare(ddp, single, names, skip=()):
    for name, value in weights(single).items():
        if any(part in name for part in skip):
            continue
        torch.testing.assert_close(weights(ddp)[name], value, rtol=1e-4, atol=1e-5)
    got, want = metrics(ddp)["history"], metrics(single)["history"]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in names} == pytest.approx({k: w[k] for k in names}, rel=1e-4, abs=1e-5)


def only_run(work, name):
    runs = list((work / "outputs" / name).iterdir())
    assert len(runs) == 1, runs  # both ranks named one run directory
    return runs[0]


def test_word2vec_under_two_processes_trains_as_one(tmp_path, compose_cfg):
    rng = random.Random(0)
    (tmp_path / "ptb").mkdir()
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(2, 12))) for _ in range(200)]
    (tmp_path / "ptb" / "ptb.train.txt").write_text("\n".join(lines) + "\n")
    run = [
        "experiment=d2l/word2vec",
        "name=w2v",
        f"paths.data_dir={tmp_path}",
        "data.min_freq=2",
        "data.batch_size=64",
        "model.embed_size=8",
        "trainer.max_epochs=2",
        "task.query=[cat]",
        *COMMON,
    ]
    work = tmp_path / "work"
    work.mkdir()
    proc = torchrun([*run, "trainer.strategy=ddp", "logger=none"], work)
    ddp = only_run(work, "w2v")
    assert (ddp / "embeddings.txt").is_file() and (ddp / "last.ckpt").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]  # rank 1 wrote nothing elsewhere
    assert (proc.stdout + proc.stderr).count("nearest to 'cat':") == 1  # rank 0 alone reports
    single = single_run(compose_cfg, [*run, "logger=none"], tmp_path / "single")
    compare(ddp, single, ["train/loss"])
    assert (ddp / "embeddings.txt").read_text().splitlines()[0].split()[0] == (
        (single / "embeddings.txt").read_text().splitlines()[0].split()[0]
    )


def test_bert_under_two_processes_trains_as_one(tmp_path, compose_cfg):
    rng = random.Random(0)
    paragraphs = [
        ". ".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(rng.randint(2, 4))) + "."
        for _ in range(60)
    ]
    (tmp_path / "timemachine.txt").write_text("\n\n".join(paragraphs) + "\n")
    run = [
        "experiment=d2l/bert_pretrain",
        "name=bert",
        f"paths.data_dir={tmp_path}",
        "data.download=false",
        "data.batch_size=32",
        "data.max_len=24",
        "data.min_freq=1",
        "model.hidden_size=16",
        "model.ffn_hidden_size=32",
        "model.dropout=0.0",  # each rank draws its own dropout masks: none, to compare with one process
        "trainer.max_steps=6",
        "logger=none",
        *COMMON,
    ]
    work = tmp_path / "work"
    work.mkdir()
    torchrun([*run, "trainer.strategy=ddp"], work)
    ddp = only_run(work, "bert")
    assert {"last.ckpt", "metrics.json", "dlrun.log"} <= {p.name for p in ddp.iterdir()}
    single = single_run(compose_cfg, run, tmp_path / "single")
    names = ["train/loss", "train/mlm_loss", "train/nsp_loss", "train/nsp_acc", "val/nsp_loss", "val/nsp_acc"]
    # The key bias adds the same number to every score of a query, which softmax ignores: its gradient is
    # rounding noise, which Adam divides by its own tiny scale, so it differs between any two summation
    # orders. (val/mlm_loss is each shard's mean weighted by its size: close to, not equal to, one process's.)
    compare(ddp, single, names, skip=["attention.W_k.bias"])
    got, want = metrics(ddp)["final"]["val/mlm_loss"], metrics(single)["final"]["val/mlm_loss"]
    assert got == pytest.approx(want, rel=0.01)
    # validation is split between the ranks (no padding): equal to one process only if both shards count
    assert metrics(ddp)["final"]["val/nsp_acc"] == pytest.approx(metrics(single)["final"]["val/nsp_acc"])
