"""Ship a fitted model: an ONNX export with its preprocessing, and `tunewise serve` (HTTP and a web page).

Nothing is imported here: the serving path must run on an ONNX export without torch installed.
"""
