"""ONNX exports of segmentation ("masks") and detection ("boxes") models: the adapters that
`tunewise.ship.onnx_export` registers under those kinds; `tunewise.ship.dense_decode` runs the
exports without torch.

Segmentation (`MaskExport`): the TaskModel itself, normalized images (B, 3, S, S) -> logits
(B, C, S, S), through onnx_export's path (the dynamo exporter, its parity gate on the logits, the
int8 gate on validation mIoU). The batch axis is dynamic; height and width stay at S, the size
the model was tuned at: the runner resizes every image to it (as `tunewise predict` does), and a
dynamic height and width cost the dynamo exporter 17 minutes on efficientnet_lite0 (50 s fixed).

Detection (`BoxExport`): torchvision's whole detector (its resize and normalization, the network,
box decoding, NMS, the boxes mapped back to the image's pixels) as one graph of one image
(3, H, W) in [0, 1], any size, -> boxes (N, 4), labels (N,) 1..C, scores (N,). It goes through
the TorchScript exporter (opset 17), as torchvision documents for its detectors: the dynamo
exporter cannot trace them (`DYNAMO_REFUSES`). Both detectors (Faster R-CNN, FCOS) export and pass
the gate. The graph has no batch axis (each image has its own size and number of boxes): a runner
calls it once per image, as `tunewise predict` runs the torch model. Its gate, on each probe
image: the same number of boxes with the same labels, scores within onnx_export's PARITY, corners
within BOX_PARITY pixels of the tuned input (image pixels times S / the image's longer side: the
detector's own resize multiplies any difference back). No int8 for detection. The graph sizes
each image as the eager detector does (`eager_resize`): torchvision's traced resize computes its
scale in float32 and came out one pixel short for some shapes (141 wide at 128: 127), which moved
every box of a real Faster R-CNN (17 boxes against 13 on a 141x71 probe). A detector whose
scores tie (saturated at 1.0, as a random head on efficientnet_lite0's features is) can be
refused: NMS keeps either of two tied boxes, and torch and onnxruntime may keep different ones.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from tunewise.errors import TunewiseError
from tunewise.ship.onnx_export import EXPORTS, PARITY, ExportAdapter, Graph
from tunewise.tasks import Task, TaskModel

BOX_PARITY = 1e-3
"""The largest max abs difference of box corners, in pixels of the tuned input, that passes, exclusive."""
OPSET = 17
"""The TorchScript exporter's opset for detectors (torchvision documents 11 or later; 16 brings
RoiAlign's half-pixel mode, 17 is what the dynamo exporter's graphs can be read beside)."""
DYNAMO_REFUSES = ("the dynamo exporter (torch.export) cannot trace torchvision's detectors: batched_nms branches "
                  "on how many boxes passed the score threshold, a data-dependent shape (GuardOnDataDependentSymNode)")
"""Why detection skips the dynamo exporter (onnx.json's "exporter_reason")."""


# --- segmentation --------------------------------------------------------------------------------

class MaskExport:
    """onnx_export's adapter for "masks": the SegmentationModel itself, normalized images
    (B, 3, S, S) -> logits (B, C, S, S), batch axis dynamic; onnx_export's write_graph (dynamo) and
    check_parity (max abs logit difference under its PARITY) do the rest."""

    reads = "image"
    int8_methods: tuple[str, ...] = ("static", "dynamic")

    def graph(self, model: TaskModel, info: dict, example: Any) -> Graph:
        example = example if example is not None and len(example) > 1 else self.random_batches(model, info)[1]
        return Graph(model, (example,), ["images"], ["logits"], {"images": {0: "batch"}, "logits": {0: "batch"}})

    def random_batches(self, model: TaskModel, info: dict) -> list[Any]:
        """Random normalized batches (1, 3, S, S) and (3, 3, S, S), seeded."""
        size = info["preprocess"].input_size
        generator = torch.Generator().manual_seed(0)
        return [torch.randn(n, 3, size, size, generator=generator) for n in (1, 3)]

    def feeds(self, batch: Any) -> dict[str, np.ndarray]:
        return {"images": batch.numpy().astype(np.float32)}

    def expected(self, model: TaskModel, batch: Any) -> list[np.ndarray]:
        return [model(batch).float().numpy()]

    def task_outputs(self, outputs: list[np.ndarray]) -> Any:
        """The predicted classes (B, S, S) uint8, as the task's `compact` keeps them for `metrics`."""
        return torch.from_numpy(outputs[0]).argmax(1).to(torch.uint8)

    def preprocessing(self, model: TaskModel, info: dict, folder: Path) -> dict:
        return masks_preprocessing(info)


def masks_preprocessing(info: dict) -> dict:
    """onnx.json's "preprocessing" for segmentation: what `dense_decode.segmentation_input` and
    `mask_from_logits` do, as dense_predict does it with torch."""
    preprocess = info["preprocess"]
    return {"input_size": preprocess.input_size, "mean": list(preprocess.mean), "std": list(preprocess.std),
            "scale": "1/255", "layout": "NCHW RGB",
            "resize": "to input_size x input_size (aspect not kept, no crop), bilinear, antialiased, on floats",
            "output": "logits resized to the image's size (bilinear, align_corners=False), then argmax"}


# --- detection -----------------------------------------------------------------------------------

class DetectionGraph(nn.Module):
    """A DetectionModel as a graph: one image (3, H, W) in [0, 1] -> boxes (N, 4) x1 y1 x2 y2 in its
    pixels, labels (N,) 1..C, scores (N,), best first; what `DetectionModel` gives for one image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = cast(nn.Module, self.model.head)([image])[0]
        keep = found["labels"] > 0  # 0 is the background (FCOS can give it)
        return found["boxes"][keep], found["labels"][keep], found["scores"][keep]


class BoxExport:
    """onnx_export's adapter for "boxes": `DetectionGraph`, one image a run. It writes and checks
    the graph itself (`write`: the TorchScript exporter, and the boxes' gate), as onnx_export's
    write_graph and check_parity take batches of one tensor shape; no int8 (`int8_methods` empty)."""

    reads = "image"
    int8_methods: tuple[str, ...] = ()
    axes = {"image": {1: "height", 2: "width"}, "boxes": {0: "boxes"}, "labels": {0: "boxes"}, "scores": {0: "boxes"}}

    def graph(self, model: TaskModel, info: dict, example: Any) -> Graph:
        image = example["images"][0] if example is not None else box_probes(info["preprocess"].input_size)[-1]
        return Graph(DetectionGraph(model).eval(), (image,), ["image"], ["boxes", "labels", "scores"], self.axes)

    def write(self, model: TaskModel, info: dict, real: list[Any], path: Path) -> tuple[Graph, dict, dict]:
        """Export to `path` and check it on the real images (the first real batch) and `box_probes`.

        Returns:
            The graph, onnx.json's "exporter" entries, and its "parity" (`boxes_parity`'s figures).

        Raises:
            TunewiseError: the gate failed (`check_boxes`); the caller writes nothing.
        """
        graph = self.graph(model, info, real[0] if real else None)
        with quiet(), eager_resize():
            torch.onnx.export(graph.module, graph.example, str(path), dynamo=False, opset_version=OPSET,
                              input_names=graph.input_names, output_names=graph.output_names, dynamic_axes=graph.axes)
        size = info["preprocess"].input_size
        probes = [*(real[0]["images"] if real else []), *box_probes(size)]
        parity = boxes_parity(path, cast(DetectionGraph, graph.module), probes, size)
        check_boxes(parity, info.get("detector", "detection"))
        return graph, {"exporter": "torchscript", "exporter_reason": DYNAMO_REFUSES}, parity

    def random_batches(self, model: TaskModel, info: dict) -> list[Any]:
        return [{"images": box_probes(info["preprocess"].input_size)}]

    def feeds(self, batch: Any) -> dict[str, np.ndarray]:
        """The graph's input for a batch of one image (the detection loader's inputs)."""
        if len(batch["images"]) != 1:
            raise ValueError(f"a detection graph runs one image at a time, not {len(batch['images'])}")
        return {"image": batch["images"][0].numpy().astype(np.float32)}

    @torch.no_grad()
    def expected(self, model: TaskModel, batch: Any) -> list[np.ndarray]:
        return [t.numpy() for t in DetectionGraph(model).eval()(batch["images"][0])]

    def task_outputs(self, outputs: list[np.ndarray]) -> Any:
        """One image's detections as the task's `metrics` reads a batch of them."""
        return [{k: torch.from_numpy(v) for k, v in zip(("boxes", "labels", "scores"), outputs, strict=True)}]

    def preprocessing(self, model: TaskModel, info: dict, folder: Path) -> dict:
        return boxes_preprocessing(info)


def check_boxes(parity: dict, detector: str) -> None:
    """The detection gate on `boxes_parity`'s figures.

    Raises:
        TunewiseError: counts or labels differ, or scores or boxes differ by PARITY or BOX_PARITY or more.
    """
    if "mismatch" not in parity and parity["max_abs_diff"] < PARITY and parity["box_max_abs_diff"] < BOX_PARITY:
        return
    found = parity.get("mismatch") or (f"scores differ by {parity['max_abs_diff']:.3g} (max abs, under {PARITY:g} "
                                       f"allowed) and boxes by {parity['box_max_abs_diff']:.3g} input pixels (under "
                                       f"{BOX_PARITY:g} allowed)")
    raise TunewiseError(f"the ONNX graph of this {detector} model does not give the torch model's boxes: {found}; "
                        "nothing was written. Serve the run folder with the torch backend.")


def box_probes(size: int) -> list[torch.Tensor]:
    """Synthetic images (3, H, W) in [0, 1] at three shapes (square at S, wide, tall and larger):
    grey noise with a few coloured rectangles, seeded."""
    generator = np.random.default_rng(0)
    probes = []
    for height, width in ((size, size), (size // 2 + 7, size + 13), (2 * size + 5, size + 3)):
        pixels = generator.integers(90, 130, (height, width, 3))
        for _ in range(3):
            side = int(generator.integers(6, max(7, min(height, width) // 2)))
            y, x = int(generator.integers(0, height - side)), int(generator.integers(0, width - side))
            pixels[y:y + side, x:x + side] = generator.integers(0, 256, 3)
        probes.append(torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1).contiguous())
    return probes


@torch.no_grad()
def boxes_parity(path: Path, graph: DetectionGraph, probes: Sequence[torch.Tensor], size: int) -> dict:
    """The graph against the torch detector on each probe image: the same number of boxes, each box
    matched to the nearest of the other side's with its label (so boxes of equal scores may come in
    either order); the scores' max abs difference, and the corners' in tuned-input pixels; and the
    first probe where counts differ or a box has no counterpart of its label, if any."""
    session = onnx_session(path)
    figures: dict[str, Any] = {"max_abs_diff": 0.0, "box_max_abs_diff": 0.0, "threshold": PARITY,
                               "box_threshold": BOX_PARITY, "probe_images": len(probes), "boxes_compared": 0}
    for index, image in enumerate(probes):
        ours = session.run(None, {"image": image.numpy()})
        theirs = [t.numpy() for t in graph(image)]
        box, score = match_boxes(ours, theirs)
        if len(ours[0]) != len(theirs[0]) or not np.isfinite(box):
            figures["mismatch"] = (f"on probe image {index} ({image.shape[2]}x{image.shape[1]}) the graph finds "
                                   f"{len(ours[0])} boxes, torch {len(theirs[0])}, or other labels")
            return figures
        to_input = size / max(image.shape[1:])  # the detector's own resize of this image
        figures["max_abs_diff"] = max(figures["max_abs_diff"], score)
        figures["box_max_abs_diff"] = max(figures["box_max_abs_diff"], box * to_input)
        figures["boxes_compared"] += len(ours[0])
    return figures


def match_boxes(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray]) -> tuple[float, float]:
    """Each box of either side against the nearest box of the same label on the other (largest
    corner difference): the worst such distance, and the worst score difference of those pairs;
    (inf, inf) when a box has no counterpart of its label.

    Shape: ours and theirs are (boxes (N, 4), labels (N,), scores (N,)).
    """
    if not len(ours[0]) or not len(theirs[0]):
        return (0.0, 0.0) if len(ours[0]) == len(theirs[0]) else (float("inf"), float("inf"))
    distance = np.abs(ours[0][:, None, :].astype(np.float64) - theirs[0][None, :, :]).max(-1)
    distance[ours[1][:, None] != theirs[1][None, :]] = np.inf
    nearest_theirs, nearest_ours = distance.argmin(1), distance.argmin(0)
    box = max(float(distance.min(1).max()), float(distance.min(0).max()))
    score = max(float(np.abs(ours[2] - theirs[2][nearest_theirs]).max()),
                float(np.abs(theirs[2] - ours[2][nearest_ours]).max()))
    return box, score


def boxes_preprocessing(info: dict) -> dict:
    """onnx.json's "preprocessing" for detection: the graph resizes and normalizes itself."""
    preprocess = info["preprocess"]
    return {"input_size": preprocess.input_size, "mean": list(preprocess.mean), "std": list(preprocess.std),
            "scale": "1/255", "layout": "CHW RGB, one image, its own size",
            "resize": "inside the graph (the detector's: longer side to input_size), boxes mapped back to the image"}


@EXPORTS.register("masks")
def masks(task: Task) -> ExportAdapter:
    """Semantic segmentation: (B, C, S, S) logits."""
    return MaskExport()


@EXPORTS.register("boxes")
def boxes(task: Task) -> ExportAdapter:
    """Object detection: one image's boxes, labels and scores."""
    return BoxExport()


# --- shared --------------------------------------------------------------------------------------

def onnx_session(path: Path) -> Any:
    """An onnxruntime session on the CPU."""
    import onnxruntime  # type: ignore[import-untyped]

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def eager_resize() -> Iterator[None]:
    """While exporting, torchvision's detector resize (`_resize_image_and_masks`) sized as the eager
    one sizes it: floor(side * min(min_size / short, max_size / long)) in float64, its divisions
    true divisions (a Python number over a tensor traces as a reciprocal times the number, which
    rounds differently), the result passed as a size. The traced original computes the scale in
    float32 (`_fake_cast_onnx`), one pixel short of eager for some sides."""
    from torchvision.models.detection import transform

    original = transform._resize_image_and_masks

    def resize(image: torch.Tensor, self_min_size: int, self_max_size: int, target: dict | None = None,
               fixed_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict | None]:
        if target is not None or fixed_size is not None:  # training, or a fixed size: not what we export
            return original(image, self_min_size, self_max_size, target, fixed_size)
        sides = torch._shape_as_tensor(image)[-2:].to(torch.float64)
        wanted = torch.tensor([self_min_size, self_max_size], dtype=torch.float64)
        scale = torch.min(wanted / torch.stack([sides.min(), sides.max()]))
        size = torch.floor(sides * scale).to(torch.int64)
        traced_size = cast(list[int], [size[0], size[1]])  # 0-dim tensors: the graph computes the size
        resized = nn.functional.interpolate(image[None], size=traced_size, mode="bilinear", align_corners=False)
        return resized[0], None

    transform._resize_image_and_masks = resize
    try:
        yield
    finally:
        transform._resize_image_and_masks = original


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.onnx's warnings (axis names, tracer warnings on torchvision's shape arithmetic) and
    progress lines say nothing a user can act on."""
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        warnings.simplefilter("ignore")
        yield
