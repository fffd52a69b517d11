"""GPU code paths exercised on the CPU: out-of-memory handling is simulated around the real forward pass."""
import logging

import numpy as np
import pytest
import torch

from liverseg import InputError, Segmenter
from liverseg.inference import InferenceOptions, SlicePredictor
from liverseg.modelfile import load_model


def _predictor(path, batch_size=8):
    pred = SlicePredictor(load_model(path), torch.device("cpu"), InferenceOptions(batch_size=batch_size))
    reference = pred._forward
    return pred, reference


def test_gpu_out_of_memory_halves_the_batch(tiny_model_path, phantom):
    vol, _, m = phantom
    pred, real_forward = _predictor(tiny_model_path)
    expected = pred.predict(vol.astype(np.float32), (5.0, 3.0, 3.0))
    pred.device = torch.device("cuda")  # pretend: batches above 2 slices do not fit on this "GPU"
    seen = []

    def fake_forward(batch):
        seen.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("simulated")
        with torch.inference_mode():
            return torch.sigmoid(pred.network(batch))

    pred._forward = fake_forward
    got = pred.predict(vol.astype(np.float32), (5.0, 3.0, 3.0))
    assert pred.options.batch_size == 2 and max(seen[-3:]) <= 2
    np.testing.assert_allclose(got.liver.astype(int), expected.liver.astype(int), atol=1)


def test_gpu_out_of_memory_at_batch_one_falls_back_to_cpu(tiny_model_path, phantom, caplog):
    vol, _, m = phantom
    pred, real_forward = _predictor(tiny_model_path, batch_size=4)
    expected = pred.predict(vol.astype(np.float32), (5.0, 3.0, 3.0))
    pred.device = torch.device("cuda")

    def fake_forward(batch):
        if pred.device.type == "cuda":
            raise torch.OutOfMemoryError("simulated")
        return real_forward(batch)

    pred._forward = fake_forward
    with caplog.at_level(logging.WARNING, logger="liverseg"):
        got = pred.predict(vol.astype(np.float32), (5.0, 3.0, 3.0))
    assert pred.device.type == "cpu" and "continuing on the CPU" in caplog.text
    # batch size changed (halved before the fallback): allow one step of 8-bit probability rounding
    np.testing.assert_allclose(got.liver.astype(int), expected.liver.astype(int), atol=1)


def test_volume_larger_than_free_memory_is_refused(monkeypatch, phantom, tiny_model_path):
    import liverseg.checks as checks

    vol, _, m = phantom
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 1000)
    with pytest.raises(InputError, match="memory"):
        Segmenter(tiny_model_path, "cpu").segment(vol, m)


def test_unavailable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="not available"):
        Segmenter(None, "cuda")
