"""mode=export ckpt_path=...: an image model as ONNX (model.onnx, torch's dynamo exporter) and as a
torch.export program (model.pt2), both with a dynamic batch dimension, for inputs shaped by the data config
(channels × resize-or-size²). Both run on the same held-out batch beside the PyTorch model (ONNX through
onnxruntime: pip install "dlrun[export]"); export.json holds the largest absolute difference of each.
A model that cannot be exported is reported with the operator that stopped it."""

import logging
import re
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrun.engine.seed import seed_everything
from dlrun.engine.summary import write_json
from dlrun.errors import DlrunError, first_line
from dlrun.modes.common import checkpoint_model, first_batch
from dlrun.run import build

log = logging.getLogger("dlrun")

EXAMPLES = 8  # the comparison batch: the first examples of the held-out split
MAX_BATCH = 65536  # the exported programs accept batches of 1..MAX_BATCH images


def run(cfg: DictConfig) -> dict:
    shape = image_shape(cfg)
    seed_everything(cfg.seed)
    device = torch.device("cpu")  # exported files are device-neutral; onnxruntime runs here on the CPU
    data = build(cfg.data, "data")
    data.setup(device, cfg.seed)
    model, paths = checkpoint_model(cfg, data, device)
    images = example_images(first_batch(data), shape, cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = export_model(model, images, out)
    result |= {"checkpoints": [str(p) for p in paths], "input_shape": ["batch", *shape]}
    result["wall_time_s"] = time.perf_counter() - start
    write_json(out / "export.json", result)
    diffs = ", ".join(f"{k} {v:.3g}" for k, v in result["max_abs_diff"].items())
    log.info("exported %s: max |difference| from PyTorch on %d images: %s", cfg.name, len(images), diffs)
    log.info("outputs: %s (model.onnx, model.pt2, export.json)", out)
    return result


def image_shape(cfg: DictConfig) -> tuple[int, int, int]:
    """(channels, height, width) from the data config (resize, else size)."""
    node = cfg.data
    size = node.get("resize") or node.get("size")
    if node.get("channels") is None or size is None:
        raise DlrunError(
            f"mode=export exports image models; data {node._target_} has no channels/size "
            "(use an image data option: fake, fashion_mnist, mnist)"
        )
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return int(node.channels), int(height), int(width)


def example_images(batch, shape: tuple, cfg: DictConfig) -> torch.Tensor:
    images = batch[0] if isinstance(batch, list | tuple) else batch
    if not torch.is_tensor(images) or tuple(images.shape[1:]) != shape:
        got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise DlrunError(
            f"data {cfg.data._target_} gives inputs {got}; mode=export expects N×{'×'.join(map(str, shape))}"
        )
    return images[:EXAMPLES].float().contiguous()


def export_model(model: torch.nn.Module, images: torch.Tensor, out: Path) -> dict:
    """model.pt2 and model.onnx in `out`, and each one's largest absolute difference from `model` on
    `images`."""
    model = model.eval()
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):  # their passes log each step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    with torch.no_grad():
        expected = model(images)
    try:
        program = torch.export.export(model, (images,), dynamic_shapes=dynamic)
    except Exception as err:
        raise DlrunError(f"torch.export cannot export {type(model).__name__}: {blame(err)}") from None
    torch.export.save(program, out / "model.pt2")
    try:
        onnx_program = torch.onnx.export(program, (images,), dynamo=True, verbose=False)
    except Exception as err:
        raise DlrunError(f"torch.onnx cannot export {type(model).__name__}: {blame(err)}") from None
    onnx_program.save(str(out / "model.onnx"))
    with torch.no_grad():
        from_pt2 = torch.export.load(out / "model.pt2").module()(images)
    from_onnx = run_onnx(out / "model.onnx", images)
    return {
        "max_abs_diff": {
            "onnx": (from_onnx - expected).abs().max().item(),
            "pt2": (from_pt2 - expected).abs().max().item(),
        },
        "examples": len(images),
        "files": ["model.onnx", "model.pt2"],
        "torch": torch.__version__,
    }


def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    try:
        import onnxruntime
    except ImportError:
        raise DlrunError(
            'mode=export runs the ONNX model with onnxruntime: pip install "dlrun[export]"'
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    return torch.from_numpy(output)


# What names an operator in the exporters' messages: an OpOverload, a custom op, a call target, an aten op.
OPERATOR_PATTERNS = (
    r"OpOverload\(op='([^']+)'",
    r"CustomOpDef\(([^)]+)\)",
    r"target=torch\.ops\.([\w.]+)",
    r"\b(aten[.:]{1,2}[\w.]+)",
)


def blame(err: BaseException) -> str:
    """`operator <name> (<first line>)` when an exporter's error (or its causes) names an operator, else the
    first line."""
    texts, seen = [], err
    while seen is not None:
        texts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(texts))
    for pattern in OPERATOR_PATTERNS:
        match = re.search(pattern, text)
        if match:
            return f"operator {match.group(1)} stopped it ({type(err).__name__}: {first_line(err, 200)})"
    return f"{type(err).__name__}: {first_line(err)}"
