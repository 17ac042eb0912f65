"""Export a fitted model to ONNX, checked: the graph must give the torch model's outputs, and an
int8 copy is kept only when it keeps the validation metric.

    tunewise export RUN --format onnx [--int8] [--int8-tolerance 0.5] [--out DIR]
    export_onnx("runs/RUN", int8=True)    # -> onnx.json's contents

What lands (in RUN/onnx/, a search's RUN/model/onnx/, or `out`), all or nothing (a temporary
folder renamed into place): model.onnx (fp32), model.int8.onnx when kept, onnx.json (task,
classes, graph inputs and outputs with their dynamic axes, preprocessing, parity, int8 figures,
source run), and tokenizer.json for text. `tunewise.ship.onnx_model.OnnxModel` runs it without torch.

1. The graph: torch.onnx's dynamo exporter (onnxscript); the TorchScript exporter only when the
   dynamo one raises (onnx.json's "exporter" says which, and why). Dynamic batch axis, and
   sequence axis for text. LoRA adapters are merged already (the strategy's `finalize` before the
   run's export; `load_model` gives a plain model; `merge_adapters` merges any left).
2. The parity gate: the graph on onnxruntime against the torch model on probe inputs (real
   validation examples through the model's own preprocessing, and random ones, at two batch sizes);
   a max abs difference of 1e-4 or more refuses the export, and nothing is written.
3. The int8 gate (--int8): onnxruntime quantization (dynamic for text models; for image models
   static QDQ calibrated on 100 training images, and dynamic, the faster of those that pass). The
   validation metric of the run (its selection metric, on its validation split) is measured for
   fp32 and int8 by the task's own `metrics`; int8 is kept only when it loses less than
   `tolerance` points (100 x the metric's fraction), a strict rule: a tolerance of 0 keeps int8
   only when it measures better than fp32. A refused int8 is reported with both figures; the fp32
   export still lands.

What differs per kind of output (`Task.outputs`) is one `ExportAdapter`, built by a factory
registered in `EXPORTS` under that kind: how the TaskModel becomes a graph of positional tensors
(names, example, dynamic axes), its probe inputs, the graph's feeds for a batch of the task's
loader, the torch outputs to compare with, the graph's outputs as `task.metrics` reads them, and
the preprocessing files. The runner side is `onnx_model.RUNNERS` under the same key.

Adding a kind (the dense helper's "masks" and "boxes"): in `tunewise/ship/onnx_dense.py`,

    @EXPORTS.register("masks")
    def masks(task: Task) -> ExportAdapter:
        return MaskExport()          # a class with ExportAdapter's methods

and the module is imported on first use (`EXPORT_MODULES`); its runner goes into RUNNERS from a
torch-free module. A kind that nobody registered is refused with a one-line error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from tunewise import __version__
from tunewise.config import DataConfig, TrainConfig
from tunewise.errors import TunewiseError, one_line
from tunewise.export import load_model, model_info
from tunewise.io import write_json
from tunewise.registry import Registry
from tunewise.ship.onnx_model import import_present
from tunewise.tasks import Task, TaskModel, task_for

log = logging.getLogger("tunewise")

PARITY = 1e-4
"""The largest max abs difference of outputs (logits, fp32) that passes the parity gate, exclusive."""
CALIBRATION = 100
"""Training examples that calibrate a static int8 model."""
EXPORT_MODULES: tuple[str, ...] = ("tunewise.ship.onnx_dense",)
"""Modules that register more adapters (dense outputs); one not yet written is skipped."""


@dataclass
class Graph:
    """A model as torch.onnx exports it: positional tensors in, a tensor or tuple of tensors out.

    Args:
        module: the wrapped model.
        example: example inputs, in `input_names` order (batch >= 2, so the batch axis stays dynamic).
        input_names: the graph's input names.
        output_names: the graph's output names.
        axes: dynamic axes by input or output name: {axis index: axis name}.
    """

    module: nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    axes: dict[str, dict[int, str]]


class ExportAdapter(Protocol):
    """One kind of output's export (see the module docstring)."""

    reads: str
    """What one input of the exported model is: "image", "text" or "pair" (onnx.json's "reads")."""
    int8_methods: tuple[str, ...]
    """The quantizations to try, of "dynamic" and "static" (QDQ, calibrated on training examples)."""

    def graph(self, model: TaskModel, info: dict, example: Any) -> Graph:
        """The model as a graph; `example` is a batch of the task's inputs (None: make one)."""
        ...

    def random_batches(self, model: TaskModel, info: dict) -> list[Any]:
        """Random batches of model inputs, at two batch sizes, for the parity gate."""
        ...

    def feeds(self, batch: Any) -> dict[str, np.ndarray]:
        """A batch of the task's model inputs as the graph's inputs by name."""
        ...

    def expected(self, model: TaskModel, batch: Any) -> list[np.ndarray]:
        """The torch model's outputs for `batch`, as the graph gives them (in its output order)."""
        ...

    def task_outputs(self, outputs: list[np.ndarray]) -> Any:
        """The graph's outputs for a batch as the task's `metrics` reads one batch's outputs."""
        ...

    def preprocessing(self, model: TaskModel, info: dict, folder: Path) -> dict:
        """Write what the runner needs beside the graph (tokenizer.json) into `folder`; return
        onnx.json's "preprocessing"."""
        ...


EXPORTS: Registry[Callable[[Task], ExportAdapter]] = Registry("ONNX export")


def export_onnx(run: str | Path, out: str | Path | None = None, int8: bool = False,
                tolerance: float = 0.5) -> dict:
    """Export the model of a fit or search run folder to ONNX, behind the parity and int8 gates.

    Args:
        run: a fit run folder, a search folder (its winner), or a model folder.
        out: the export's folder (default: `onnx/` beside the model).
        int8: also quantize to int8, kept only within `tolerance`.
        tolerance: the most validation-metric points int8 may lose, exclusive.

    Returns:
        onnx.json's contents; `["int8"]["kept"]` says whether int8 landed, `["int8"]["reason"]` why not.

    Raises:
        TunewiseError: a task whose outputs cannot be exported, a failed parity gate (nothing is
            written), int8 without the run's validation data, or an `out` holding other files.
    """
    folder, info = model_info(run)
    task = task_for(info["task"], **info)
    adapter = adapter_for(task)
    target = Path(out) if out is not None else folder / "onnx"
    check_target(target)
    model, info = load_model(folder)
    merge_adapters(model)
    splits = validation_data(folder, info, task, needed=int8)
    real = real_batches(task, info, splits)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        if hasattr(adapter, "write"):  # an adapter that exports and gates its graph itself (detection)
            graph, exporter, parity = adapter.write(model, info, real, path)
        else:
            graph = adapter.graph(model, info, real[0] if real else None)
            exporter = write_graph(graph, path)
            parity = check_parity(path, adapter, model, real, adapter.random_batches(model, info), task)
        meta = {"format": "onnx", "task": task.name, "task_outputs": task.outputs, "reads": adapter.reads,
                "classes": info["classes"], **graph_spec(path, graph), **exporter, "parity": parity,
                "preprocessing": adapter.preprocessing(model, info, Path(tmp)),
                "files": {"fp32": "model.onnx", "int8": None}, "source": source(folder, run),
                "tunewise_version": __version__}
        feeds = timing_feeds(adapter, real or adapter.random_batches(model, info))
        meta["fp32"] = {"bytes": path.stat().st_size, "latency_ms": latency_ms(path, feeds)}
        if int8:
            run_data = RunData(task, info, splits, meta["source"].get("metric") or task.metric)
            meta["int8"] = int8_gate(path, adapter, run_data, feeds, meta["fp32"], tolerance)
            meta["files"]["int8"] = "model.int8.onnx" if meta["int8"]["kept"] else None
        else:
            meta["int8"] = {"asked": False, "kept": False}
        write_json(Path(tmp) / "onnx.json", meta)
        land(Path(tmp), target)
    return meta | {"folder": str(target)}


def adapter_for(task: Task) -> ExportAdapter:
    """The export adapter of the task's kind of output.

    Raises:
        TunewiseError: no adapter registered for it.
    """
    import_present(EXPORT_MODULES)
    if task.outputs not in EXPORTS:
        raise TunewiseError(f"{task.name} models (outputs {task.outputs!r}) cannot be exported to ONNX by this "
                            f"tunewise; it exports {', '.join(EXPORTS.names())}. Serve the run folder with the "
                            "torch backend instead.")
    return EXPORTS.get(task.outputs)(task)


def check_target(target: Path) -> None:
    """`target` is new, empty, or an earlier export (it holds onnx.json): anything else is the user's.

    Raises:
        TunewiseError: `target` is a file, or a folder of other files.
    """
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / "onnx.json").is_file())):
        raise TunewiseError(f"--out {str(target)!r} holds files that are not an ONNX export; nothing was written. "
                            "Pass a new or empty folder.")


def merge_adapters(model: nn.Module) -> None:
    """Merge any LoRA adapters (peft layers) into their base layers, as the lora strategy's
    `finalize` does, so the graph holds plain weights. A model from `load_model` has none."""
    for name, module in list(model.named_modules()):
        if hasattr(module, "merge") and hasattr(module, "get_base_layer"):
            module.merge()
            model.set_submodule(name, module.get_base_layer())


def validation_data(folder: Path, info: dict, task: Task, needed: bool) -> Any:
    """The run's data splits (record.json's data config), or None when they cannot be read and are
    not `needed` (the parity gate then uses random probes alone).

    Raises:
        TunewiseError: `needed`, and the data cannot be read, or its classes differ from the model's.
    """
    from tunewise.data import load_data
    from tunewise.records import RunRecord

    try:
        record = RunRecord.load(folder / "record.json")
        splits = load_data(DataConfig(**record.data_config), task)
        if splits.classes != info["classes"]:
            raise TunewiseError(f"the run's data now has classes {splits.classes}, the model {info['classes']}")
    except (OSError, TypeError, KeyError, ValueError) as err:  # ValueError: TunewiseError and bad JSON
        if needed:
            raise TunewiseError(f"--int8 measures the validation metric on the run's data, which cannot be read "
                                f"({one_line(err)}). Make the run's data readable where it was, or export "
                                "without --int8.") from None
        log.warning("the run's data cannot be read (%s): the parity gate uses random inputs alone", one_line(err))
        return None
    return splits


def loader(task: Task, info: dict, data: Any, batch_size: int) -> DataLoader:
    """The task's own evaluation batches of `data` (its preprocessing, in order)."""
    return task.loader(data, info["preprocess"], TrainConfig(batch_size=batch_size, num_workers=0), training=False)


def real_batches(task: Task, info: dict, splits: Any) -> list[Any]:
    """Probe batches of real validation examples: the first four, and the first alone."""
    if splits is None:
        return []
    inputs, _ = next(iter(loader(task, info, splits.val, 4)))
    return [inputs, first_rows(inputs, 1)]


def first_rows(batch: Any, n: int) -> Any:
    if isinstance(batch, dict):
        return {k: v[:n] for k, v in batch.items()}
    return batch[:n]


# --- the graph ---------------------------------------------------------------------------------

def write_graph(graph: Graph, path: Path) -> dict:
    """Export `graph` to `path` (one file, weights inside): the dynamo exporter, or the TorchScript
    one where dynamo raises. Returns onnx.json's "exporter" (and "dynamo_error" on fallback)."""
    graph.module.eval()
    try:
        with _quiet():
            _dynamo_export(graph, path)
        return {"exporter": "dynamo"}
    except Exception as err:  # torch.export's failures come as many kinds; the TorchScript exporter may still do
        log.warning("the dynamo ONNX exporter failed (%s); using the TorchScript exporter", one_line(err)[:300])
        with _quiet():
            torch.onnx.export(graph.module, graph.example, str(path), dynamo=False, input_names=graph.input_names,
                              output_names=graph.output_names, dynamic_axes=graph.axes, opset_version=17)
        return {"exporter": "torchscript", "dynamo_error": one_line(err)[:500]}


def _dynamo_export(graph: Graph, path: Path) -> None:
    dims: dict[str, Any] = {}
    shapes = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in graph.axes[n].items()}
                   for n in graph.input_names)
    program = torch.onnx.export(graph.module, graph.example, dynamo=True, input_names=graph.input_names,
                                output_names=graph.output_names, dynamic_shapes=shapes, verbose=False, optimize=True)
    assert program is not None, "dynamo=True with no file returns the program"
    program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx's warnings about axis names and its progress lines say nothing a user can act on."""
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        warnings.simplefilter("ignore")
        yield


def graph_spec(path: Path, graph: Graph) -> dict:
    """onnx.json's "inputs", "outputs" (name, shape with axis names, element type) and "opset",
    read from the written graph (the exporter may drop an input the model never reads)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def spec(value: Any) -> dict:
        shape = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        return {"name": value.name, "shape": shape,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name}

    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {"inputs": [spec(v) for v in proto.graph.input], "outputs": [spec(v) for v in proto.graph.output],
            "opset": opset, "dynamic_axes": graph.axes}


def session(path: Path) -> Any:
    import onnxruntime  # type: ignore[import-untyped]

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_graph(sess: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    names = {i.name for i in sess.get_inputs()}
    return list(sess.run(None, {k: v for k, v in feeds.items() if k in names}))


@torch.no_grad()
def check_parity(path: Path, adapter: ExportAdapter, model: TaskModel, real: list[Any], random: list[Any],
                 task: Task) -> dict:
    """The largest abs difference between the graph's and the torch model's outputs over the probes.

    Raises:
        TunewiseError: it is PARITY or more (or the shapes differ): the export is refused.
    """
    sess = session(path)
    model.eval()
    worst = 0.0
    for batch in [*real, *random]:
        for ours, theirs in zip(run_graph(sess, adapter.feeds(batch)), adapter.expected(model, batch), strict=True):
            if ours.shape != theirs.shape:
                worst = float("inf")
                break
            worst = max(worst, float(np.abs(ours.astype(np.float64) - theirs).max()))
    if not worst < PARITY:
        raise TunewiseError(f"the ONNX graph of this {task.name} model gives outputs that differ from the torch "
                            f"model's by {worst:.3g} (max abs, over {len(real) + len(random)} probe batches), not "
                            f"under the {PARITY:g} the export promises; nothing was written. Rerun with --debug and "
                            "report it with the model's name.")
    return {"max_abs_diff": worst, "threshold": PARITY, "real_batches": len(real), "random_batches": len(random),
            "batch_sizes": sorted({_batch_size(b) for b in [*real, *random]})}


def _batch_size(batch: Any) -> int:
    return int(next(iter(batch.values())).shape[0] if isinstance(batch, dict) else batch.shape[0])


def land(tmp: Path, target: Path) -> None:
    """Rename the finished export into place; an earlier export there is replaced whole."""
    old = None
    if target.exists():
        old = target.parent / f".onnx-old-{os.getpid()}-{time.time_ns()}"
        os.rename(target, old)
    os.rename(tmp, target)
    tmp.mkdir()  # TemporaryDirectory removes its folder on exit
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def source(folder: Path, run: str | Path) -> dict:
    """Where the export came from, for /metadata: the run, base model, strategy, selection metric and
    its validation value (record.json, present in fit run folders and a search's model/)."""
    from tunewise.records import RunRecord

    found: dict[str, Any] = {"run": str(Path(run).resolve()), "model_folder": str(folder.resolve())}
    with contextlib.suppress(OSError, TypeError, ValueError):
        record = RunRecord.load(folder / "record.json")
        found |= {"model": record.model, "strategy": record.strategy, "metric": record.metric,
                  "val_metric": record.val.get(record.metric)}
    return found


# --- int8 --------------------------------------------------------------------------------------

def timing_feeds(adapter: ExportAdapter, batches: list[Any]) -> dict[str, np.ndarray]:
    """One input's feeds: what the latency figures time (one request, no batching)."""
    return adapter.feeds(first_rows(batches[0], 1))


def latency_ms(path: Path, feeds: dict[str, np.ndarray], repeats: int = 20) -> float:
    """The median wall time of one run of the graph on `feeds`, after 3 warm-up runs, in ms."""
    sess = session(path)
    for _ in range(3):
        run_graph(sess, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_graph(sess, feeds)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


@dataclass
class RunData:
    """What the int8 gate measures with: the task, the model's info, the run's data splits, and the
    run's selection metric."""

    task: Task
    info: dict
    splits: Any
    metric: str


def int8_gate(fp32: Path, adapter: ExportAdapter, run: RunData, feeds: dict[str, np.ndarray],
              fp32_figures: dict, tolerance: float) -> dict:
    """Quantize `fp32` by each of the adapter's methods, measure the run's validation metric, and keep
    (as model.int8.onnx beside it) the fastest that loses less than `tolerance` points."""
    if not adapter.int8_methods:
        reason = (f"int8 refused: this tunewise does not quantize {run.task.name} models (their graph runs one image "
                  "at a time, and NMS would see int8 scores); the fp32 model is exported.")
        log.warning("%s", reason)
        return {"asked": True, "kept": False, "reason": reason}
    val = loader(run.task, run.info, run.splits.val, 32)
    metric = run.metric
    greater = metric not in run.task.lower_is_better
    fp32_value = onnx_metric(fp32, adapter, run.task, val, metric)
    tried: list[dict[str, Any]] = []
    for method in adapter.int8_methods:
        path = fp32.with_name(f"model.{method}.onnx")
        quantize(fp32, path, method, adapter, run)
        value = onnx_metric(path, adapter, run.task, val, metric)
        lost = round(100 * (fp32_value - value if greater else value - fp32_value), 4)
        tried.append({"method": method, "metric_int8": value, "points_lost": lost, "bytes": path.stat().st_size,
                      "latency_ms": latency_ms(path, feeds), "passed": lost < tolerance, "file": path})
    passing = sorted((t for t in tried if t["passed"]), key=lambda t: t["latency_ms"])
    kept = passing[0] if passing else None
    for t in tried:
        file = t.pop("file")
        if t is kept:
            os.replace(file, fp32.with_name("model.int8.onnx"))
        else:
            file.unlink()
    result = {"asked": True, "kept": kept is not None, "metric": metric, "metric_fp32": fp32_value,
              "tolerance_points": tolerance, "rule": "kept when points lost < tolerance (points: 100 x the metric)",
              "examples": len(run.splits.val), "fp32_bytes": fp32_figures["bytes"],
              "fp32_latency_ms": fp32_figures["latency_ms"], "tried": tried}
    if kept is not None:
        return result | {"method": kept["method"], "metric_int8": kept["metric_int8"], "int8_bytes": kept["bytes"],
                         "int8_latency_ms": kept["latency_ms"]}
    best = min(tried, key=lambda t: t["points_lost"])
    reason = (f"int8 refused: validation {metric} {100 * best['metric_int8']:.2f} (int8, {best['method']}) vs "
              f"{100 * fp32_value:.2f} (fp32), {best['points_lost']:.2f} points lost, not under the tolerance of "
              f"{tolerance:g}; the fp32 model is exported. Pass a larger --int8-tolerance to keep it.")
    log.warning("%s", reason)
    return result | {"reason": reason}


def onnx_metric(path: Path, adapter: ExportAdapter, task: Task, val: DataLoader, metric: str) -> float:
    """`metric` of the graph at `path` on the loader's examples, by the task's own `metrics`."""
    sess = session(path)
    outputs, targets = [], []
    for inputs, labels in val:
        outputs.append(adapter.task_outputs(run_graph(sess, adapter.feeds(inputs))))
        targets.append(labels)
    return float(task.metrics(outputs, targets, val.dataset)[metric])


def quantize(fp32: Path, out: Path, method: str, adapter: ExportAdapter, run: RunData) -> None:
    """int8 weights (dynamic: activations quantized at run time) or int8 weights and activations
    (static: QDQ, activation ranges calibrated on CALIBRATION training examples)."""
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # type: ignore[import-untyped]

    prepared = fp32.with_name(f"prepared.{method}.onnx")
    with _quiet():
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        else:
            names = [i.name for i in session(fp32).get_inputs()]
            quantize_static(str(prepared), str(out), Calibration(adapter, calibration_batches(run), names),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
    prepared.unlink()


def calibration_batches(run: RunData) -> DataLoader:
    """CALIBRATION training examples drawn at random (seed 0), preprocessed for evaluation."""
    train = loader(run.task, run.info, run.splits.train, 16)
    size = len(cast(Sized, train.dataset))
    picked = np.random.default_rng(0).choice(size, min(CALIBRATION, size), replace=False)
    # one example per batch: the percentile and entropy calibrators stack batches, which must be the same size
    return DataLoader(Subset(train.dataset, sorted(picked.tolist())), batch_size=1, collate_fn=train.collate_fn)


class Calibration:
    """onnxruntime's CalibrationDataReader over a loader's batches."""

    def __init__(self, adapter: ExportAdapter, batches: DataLoader, names: list[str]) -> None:
        self.adapter = adapter
        self.batches = iter(batches)
        self.names = names

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {n: self.adapter.feeds(batch[0])[n] for n in self.names}


# --- the adapters: images and text, one tensor of scores out --------------------------------------

class ImageExport:
    """Image batches (B, 3, S, S) at the size the model was tuned at in; scores out. The
    preprocessing travels as JSON (Preprocess's fields) that the runner applies with Pillow and numpy."""

    reads = "image"
    int8_methods: tuple[str, ...] = ("static", "dynamic")
    output_axes: dict[int, str] = {0: "batch"}

    def graph(self, model: TaskModel, info: dict, example: Any) -> Graph:
        example = example if example is not None and len(example) > 1 else self.random_batches(model, info)[1]
        return Graph(model, (example,), ["pixel_values"], ["logits"],
                     {"pixel_values": {0: "batch"}, "logits": self.output_axes})

    def random_batches(self, model: TaskModel, info: dict) -> list[Any]:
        size = info["preprocess"].input_size
        generator = torch.Generator().manual_seed(0)
        return [torch.randn(n, 3, size, size, generator=generator) for n in (1, 3)]

    def feeds(self, batch: Any) -> dict[str, np.ndarray]:
        return {"pixel_values": batch.numpy().astype(np.float32)}

    def expected(self, model: TaskModel, batch: Any) -> list[np.ndarray]:
        return [model(batch).float().numpy()]

    def task_outputs(self, outputs: list[np.ndarray]) -> Any:
        return torch.from_numpy(outputs[0])

    def preprocessing(self, model: TaskModel, info: dict, folder: Path) -> dict:
        return {**asdict(info["preprocess"]), "resize": "shorter side to resize_size", "crop": "centre, input_size",
                "scale": "1/255", "layout": "NCHW RGB"}


class TextExport:
    """Token batches (B, T) in: input_ids, attention_mask and token_type_ids (those the tokenizer
    gives); scores out, (B, C) or per token (B, T, C). tokenizer.json (the fast tokenizer's
    backend) travels beside the graph, run by the `tokenizers` library.

    Args:
        reads: "text", or "pair" (question answering: (question, context), windowed).
        per_token: one row of scores per token.
    """

    int8_methods: tuple[str, ...] = ("dynamic",)

    def __init__(self, reads: str, per_token: bool) -> None:
        self.reads = reads
        self.output_axes = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}

    def graph(self, model: TaskModel, info: dict, example: Any) -> Graph:
        example = example if example is not None and _batch_size(example) > 1 else self.random_batches(model, info)[1]
        names = [n for n in MODEL_INPUTS if n in example]
        return Graph(TokenInputs(model, names), tuple(example[n] for n in names), names, ["logits"],
                     {**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": self.output_axes})

    def random_batches(self, model: TaskModel, info: dict) -> list[Any]:
        """Random ids (special tokens too) at batch sizes 1 and 3; the last two rows padded."""
        tokenizer = info["preprocess"].tokenizer
        names = [n for n in MODEL_INPUTS if n in tokenizer("a", "b")]
        generator = torch.Generator().manual_seed(0)
        batches = []
        for n, length in ((1, 7), (3, min(24, text_limit(model, tokenizer)))):
            ids = torch.randint(0, len(tokenizer), (n, length), generator=generator)
            mask = torch.ones_like(ids)
            mask[1:, length // 2 + 1:] = 0
            ids[mask == 0] = tokenizer.pad_token_id
            types = torch.zeros_like(ids)
            if self.reads == "pair":
                types[:, length // 2:] = 1
            batches.append({k: v for k, v in zip(MODEL_INPUTS, (ids, mask, types), strict=True) if k in names})
        return batches

    def feeds(self, batch: Any) -> dict[str, np.ndarray]:
        return {k: v.numpy().astype(np.int64) for k, v in batch.items()}

    def expected(self, model: TaskModel, batch: Any) -> list[np.ndarray]:
        return [model(batch).float().numpy()]

    def task_outputs(self, outputs: list[np.ndarray]) -> Any:
        return torch.from_numpy(outputs[0])

    def preprocessing(self, model: TaskModel, info: dict, folder: Path) -> dict:
        """tokenizer.json, and how the runner truncates and pads: as transformers' pipelines do for
        classification and NER (truncated at the model's limit), as tunewise's QA windows for pairs."""
        tokenize = info["preprocess"]
        tokenizer = tokenize.tokenizer
        tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
        spec: dict[str, Any] = {"tokenizer": "tokenizer.json", "pad_id": tokenizer.pad_token_id,
                                "unk_id": tokenizer.unk_token_id, "trained_max_length": tokenize.max_length,
                                "max_length": text_limit(model, tokenizer), "truncation": "longest_first"}
        if self.reads == "pair":
            from tunewise.tasks.question_answering import MAX_ANSWER_TOKENS

            context_first = tokenizer.padding_side == "left"
            spec |= {"max_length": tokenize.max_length, "stride": min(tokenize.doc_stride, tokenize.max_length // 2),
                     "truncation": "only_first" if context_first else "only_second", "context_first": context_first,
                     "max_answer_tokens": MAX_ANSWER_TOKENS,
                     # as `tunewise predict` decodes: "no answer" (the [CLS] score beating every span)
                     # only for a model trained on unanswerable questions (SQuAD v2)
                     "allow_no_answer": info.get("unanswerable", True)}
        return spec


def text_limit(model: TaskModel, tokenizer: Any) -> int:
    """The most tokens the model reads: its position embeddings, or the tokenizer's limit when lower."""
    limit = int(getattr(cast(Any, model.backbone).model.config, "max_position_embeddings", 512))
    if 0 < tokenizer.model_max_length < 100_000:  # unset limits come as huge sentinels
        limit = min(limit, int(tokenizer.model_max_length))
    return limit


class TokenInputs(nn.Module):
    """A text TaskModel that takes its token tensors by position (what an ONNX graph's inputs are):
    `names` are those of MODEL_INPUTS the tokenizer gives, in that order."""

    def __init__(self, model: TaskModel, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out: torch.Tensor = self.model({name: given[name] for name in self.names})
        return out


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@EXPORTS.register("class_scores")
def class_scores(task: Task) -> ExportAdapter:
    """Image or text classification: (B, C) scores."""
    return ImageExport() if task.modality == "image" else TextExport("text", per_token=False)


@EXPORTS.register("token_scores")
def token_scores(task: Task) -> ExportAdapter:
    """Token classification: (B, T, C) scores."""
    return TextExport("text", per_token=True)


@EXPORTS.register("spans")
def spans(task: Task) -> ExportAdapter:
    """Extractive question answering: (B, T, 2) start and end scores over windows of the context."""
    return TextExport("pair", per_token=True)
