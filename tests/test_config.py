"""Every option of every config group composes, resolves and builds."""

import pytest
import torch
from conftest import CONF_DIR
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dlrun.run import model_node

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [
    (group, str(path.relative_to(CONF_DIR / group).with_suffix("")))
    for group in GROUPS
    for path in sorted((CONF_DIR / group).rglob("*.yaml"))
]


# Options that only compose with particular partners (e.g. a text dataset needs a text task and model).
TOYS_2D = ("data=steps", "model=point2d", "task=trajectory")  # the optimization chapter's 2-D paths
COMPANIONS: dict[str, list[str]] = {
    "model=linear_regression": ["data=synthetic_linear", "task=regression"],
    "model=logistic_regression": ["data=csv", "data.task=classification"],
    "task=regression": ["data=synthetic_linear", "model=linear_regression"],
    **{
        f"data={name}": ["task=regression", "model=linear_regression"]
        for name in ("synthetic_linear", "polynomial", "high_dim_linear", "kaggle_house", "csv", "airfoil")
    },
    "data=timemachine": ["task=language_model", "model=gru"],
    "data=text": ["task=language_model", "model=gru", "data.path=corpus.txt"],
    "task=language_model": ["data=timemachine", "model=gru"],
    **{
        f"model={name}": ["data=timemachine", "task=language_model"]
        for name in ("rnn_scratch", "rnn", "gru_scratch", "gru", "lstm_scratch", "lstm")
    },
    "data=fra_eng": ["task=seq2seq", "model=seq2seq"],
    "data=gaussian": ["task=gan", "model=gan"],
    **{option: [other for other in TOYS_2D if other != option] for option in TOYS_2D},
    "model=gan": ["task=gan", "data=gaussian"],
    "model=dcgan": ["task=gan"],
    **{f"model={name}": ["data=fra_eng", "task=seq2seq"] for name in ("seq2seq", "bahdanau", "transformer")},
    "data=kernel_regression": ["task=regression", "model=nadaraya_watson"],
    "model=nadaraya_watson": ["data=kernel_regression", "task=regression"],
    "data=ptb_word2vec": ["model=skip_gram", "task=word2vec"],
    "model=skip_gram": ["data=ptb_word2vec", "task=word2vec"],
    "task=word2vec": ["data=ptb_word2vec", "model=skip_gram"],
    **{
        f"data={name}": ["model=bert", "task=bert_pretrain"]
        for name in ("ptb_bert", "wikitext2", "timemachine_paragraphs")
    },
    "data=paragraphs": ["model=bert", "task=bert_pretrain", "data.path=corpus.txt"],
    "model=bert": ["data=ptb_bert", "task=bert_pretrain"],
    "task=bert_pretrain": ["data=ptb_bert", "model=bert"],
    **{f"data={name}": ["task=detection", "model=tiny_ssd"] for name in ("banana", "fmnist_detection")},
    "model=tiny_ssd": ["task=detection", "data=fmnist_detection"],
    "task=detection": ["data=fmnist_detection", "model=tiny_ssd"],
    **{f"data={name}": ["task=segmentation", "model=fcn"] for name in ("voc_seg", "fmnist_segmentation")},
    "model=fcn": ["task=segmentation", "data=fmnist_segmentation"],
    "task=segmentation": ["data=fmnist_segmentation", "model=fcn"],
    "data=style_images": ["task=style_transfer", "model=style_vgg"],
    "model=style_vgg": ["task=style_transfer", "data=style_images"],
    "task=style_transfer": ["data=style_images", "model=style_vgg"],
}


def overrides_for(group: str, option: str) -> list[str]:
    return [f"{group}={option}", *COMPANIONS.get(f"{group}={option}", [])]


def test_groups_are_the_documented_ones():
    assert set(GROUPS) >= {
        "model",
        "data",
        "optim",
        "sched",
        "trainer",
        "logger",
        "paths",
        "experiment",
        "task",
    }


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(compose_cfg, group, option):
    if group == "hparams_search":  # Optuna searches need the sweep extra (CI has it)
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_cfg(overrides_for(group, option))
    job = OmegaConf.to_container(cfg)
    job.pop("hydra")
    resolved = OmegaConf.to_container(OmegaConf.create(job), resolve=True)
    if "num_classes" in resolved["data"] and not resolved["task"]["_target_"].endswith("GANTask"):
        assert resolved["model"]["num_classes"] == resolved["data"]["num_classes"]
        assert resolved["model"]["in_channels"] == resolved["data"]["channels"]
    if group == "experiment":
        assert cfg.name == option.replace("/", "_") or option == "smoke"


# Models with a `???` key (vocab_size, in_features) get it from the data at run time: text and tabular
# models. Every other model but the GANs classifies images.
GENERATIVE = ("gan", "dcgan")
NOT_CLASSIFIERS = GENERATIVE + ("tiny_ssd", "fcn", "style_vgg", "point2d")  # their own tests
IMAGE_MODELS = [
    o
    for g, o in OPTIONS
    if g == "model"
    and o not in NOT_CLASSIFIERS
    and "???" not in (CONF_DIR / "model" / f"{o}.yaml").read_text()
]


def test_image_models_are_found():
    assert {"lenet", "lenet_relu", "mlp_dropout", "resnet34", "vgg11_quarter"} <= set(IMAGE_MODELS)


@pytest.mark.parametrize("option", IMAGE_MODELS)
def test_every_image_model_builds_from_the_data_config(compose_cfg, option):
    cfg = compose_cfg([f"model={option}", "data.num_classes=7", "data.channels=3"])
    model = instantiate(model_node(cfg))
    size = cfg.model.image_size
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("group", ["optim", "sched"])
def test_optimizers_and_schedulers_build_as_partials(compose_cfg, group):
    for option in [o for g, o in OPTIONS if g == group]:
        cfg = compose_cfg([f"{group}={option}"])
        optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
        assert isinstance(optimizer, torch.optim.Optimizer)
        if cfg.sched.scheduler is not None:
            scheduler = instantiate(cfg.sched.scheduler)(optimizer)
            assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
            assert cfg.sched.interval in ("epoch", "step")


def test_model_input_size_drives_data_resize_unless_overridden(compose_cfg):
    cfg = compose_cfg(["+model.input_size=32"])
    assert cfg.data.resize == 32 and cfg.model.image_size == 32
    assert "input_size" not in model_node(cfg)
    cfg = compose_cfg(["+model.input_size=32", "data.resize=40"])
    assert cfg.model.image_size == 40
    cfg = compose_cfg([])
    assert cfg.data.resize is None and cfg.model.image_size == 28


def test_data_dir_follows_the_environment(compose_cfg, monkeypatch):
    monkeypatch.setenv("DLRUN_DATA_DIR", "/somewhere/data")
    assert compose_cfg(["data=fashion_mnist"]).data.root == "/somewhere/data"
    monkeypatch.delenv("DLRUN_DATA_DIR")
    assert compose_cfg(["data=fashion_mnist"]).data.root == "data"


def test_book_hyperparameters(compose_cfg):
    book = {  # lr, batch size, epochs (v2 edition, ../shared/d2l-reference.md)
        "softmax_regression": (0.1, 256, 10),
        "mlp": (0.1, 256, 10),
        "mlp_dropout": (0.5, 256, 10),
        "lenet": (0.9, 256, 10),
        "lenet_bn": (1.0, 256, 10),
    }
    for name, (lr, batch, epochs) in book.items():
        cfg = compose_cfg([f"experiment=d2l/{name}"])
        assert (cfg.optim.lr, cfg.data.batch_size, cfg.trainer.max_epochs) == (lr, batch, epochs), name
        assert cfg.data._target_.endswith("TorchvisionImageData") and cfg.data.dataset == "FashionMNIST"
    assert list(compose_cfg(["experiment=d2l/mlp_dropout"]).model.dropout) == [0.2, 0.5]
