"""vitpose_hf leaves process-wide state of other libraries as it found it: transformers' loggers
(registration, the shape-mismatch retry of `from_pretrained`). OpenCV's thread count after crops is
checked in test_crop_speed_paths.py."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import tiny_config_kwargs

from vitpose_hf import VitPoseConfig, VitPoseForPoseEstimation

LOGGERS = ("transformers", "transformers.utils.import_utils", "transformers.modeling_utils")


def _state(name: str) -> tuple:
    log = logging.getLogger(name)
    return log.level, list(log.filters), list(log.handlers), log.disabled, log.propagate


def test_registration_leaves_transformers_loggers_alone():
    """In a fresh interpreter: importing vitpose_hf (which registers the Auto classes) and registering
    again neither touch transformers' loggers (no level / filter / handler change, not even for the
    duration) nor consume transformers' own warnings, and map our config to our processor only."""
    script = textwrap.dedent(
        f"""
        import json, logging
        import transformers  # its library logger is configured on import
        names = {LOGGERS!r}
        def state(name):
            log = logging.getLogger(name)
            return [log.level, [id(f) for f in log.filters], [id(h) for h in log.handlers], log.disabled, log.propagate]
        before = {{name: state(name) for name in names}}
        calls = []
        for method in ("setLevel", "addFilter", "removeFilter", "addHandler", "removeHandler"):
            original = getattr(logging.Logger, method)
            def spy(self, *args, _original=original, _method=method):
                if self.name.startswith("transformers"):
                    calls.append([self.name, _method])
                return _original(self, *args)
            setattr(logging.Logger, method, spy)
        import vitpose_hf
        from vitpose_hf import registration
        registration._DONE.clear()
        vitpose_hf.register()
        after = {{name: state(name) for name in names}}
        from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
        entry = {{k: v.__module__ + "." + v.__name__ for k, v in IMAGE_PROCESSOR_MAPPING[vitpose_hf.VitPoseConfig].items()}}
        print(json.dumps({{"calls": calls, "same": before == after, "entry": entry}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["calls"] == [] and result["same"]
    assert result["entry"] == {"pil": "vitpose_hf.image_processing_vitpose.VitPoseTopDownImageProcessor"}
    assert "requires torchvision" not in out.stderr  # registration does not load transformers' processors


@pytest.fixture
def tiny_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    VitPoseForPoseEstimation(VitPoseConfig(**tiny_config_kwargs())).save_pretrained(directory)
    return directory


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_mismatch_retry_logs_one_report_and_leaves_the_logger_alone(tiny_checkpoint):
    log = logging.getLogger("transformers.modeling_utils")
    capture = _Capture()
    log.addHandler(capture)
    try:
        before = {name: _state(name) for name in LOGGERS}
        with pytest.raises(ValueError, match="have another shape"):
            VitPoseForPoseEstimation.from_pretrained(tiny_checkpoint, num_labels=5)
        assert {name: _state(name) for name in LOGGERS} == before
    finally:
        log.removeHandler(capture)
    if log.isEnabledFor(logging.WARNING):  # the first attempt's report, not the retry's
        assert sum(" LOAD REPORT" in m for m in capture.messages) == 1


def test_the_load_report_filter_drops_only_this_threads_reports():
    from vitpose_hf.modeling_vitpose import _DropLoadReports

    log = logging.getLogger("vitpose_hf.tests.reports")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    capture = _Capture()
    log.addHandler(capture)
    drop = _DropLoadReports()
    log.addFilter(drop)
    try:
        log.warning("Model LOAD REPORT from: here")  # dropped
        log.warning("another warning")
        worker = threading.Thread(target=lambda: log.warning("Model LOAD REPORT from: elsewhere"))
        worker.start()
        worker.join()
    finally:
        log.removeFilter(drop)
        log.removeHandler(capture)
    assert capture.messages == ["another warning", "Model LOAD REPORT from: elsewhere"]
