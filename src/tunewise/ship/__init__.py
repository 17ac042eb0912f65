"""Ship a fitted model: ONNX exports with their preprocessing (`onnx_export`, which needs torch),
the runner that predicts from them with onnxruntime alone (`onnx_model`, no torch), and the
server (`serve`). Nothing is imported here, so importing a torch-free module of this package
stays torch-free.
"""
