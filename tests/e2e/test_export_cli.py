"""`tunewise export` at the command line, as a user meets it (the exports themselves are tested in
tests/unit/test_onnx_export.py, in process)."""

from __future__ import annotations

import subprocess
import sys


def test_export_of_a_folder_without_a_model_is_one_line_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tunewise", "export", str(tmp_path), "--format", "onnx"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "holds no exported model" in lines[0]
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())
