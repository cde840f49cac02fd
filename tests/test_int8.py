"""int8 inference (OpenVINO + NNCF static quantization): only when asked, close to fp32 but not
within the parity bar, so part of the fingerprint, refused under model.int8_min_cosine, quantized
once per model. The calibration sample is cut to CALIBRATION_TEXTS here to keep the suite fast."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

import embedpipe.encoding.encoder as encoder_module
import embedpipe.encoding.int8 as int8_module
from embedpipe.config import ChunkingConfig, ModelConfig
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.int8 import calibration_sample
from embedpipe.encoding.precision import cosines
from embedpipe.errors import ModelError
from embedpipe.hashing import fingerprint

pytestmark = pytest.mark.skipif(
    find_spec("openvino") is None or find_spec("nncf") is None,
    reason="int8 needs OpenVINO and NNCF: pip install 'embedpipe[openvino]' (scripts/test.sh does)",
)
CALIBRATION_TEXTS = 48  # the product uses 300 (int8.CALIBRATION_SIZE)
LOOSE = 0.95  # bar for a model calibrated on 48 texts


@pytest.fixture(scope="module")
def int8_world(encoder: Encoder) -> Iterator[pytest.MonkeyPatch]:
    """Encoders built here share the session's model and cache (one export) and the short sample
    (its quantized model is cached apart from a full sample's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encoder_module, "_load", lambda path, device: encoder.model)
        mp.setattr(int8_module, "CALIBRATION_SIZE", CALIBRATION_TEXTS)
        yield mp


@pytest.fixture(scope="module")
def int8(int8_world: pytest.MonkeyPatch) -> Encoder:
    return Encoder(ModelConfig(precision="int8", device="cpu", int8_min_cosine=LOOSE))


def test_int8_vectors_stay_close_to_fp32_and_the_reason_says_how_close(
    int8: Encoder, encoder: Encoder, stdlib_docs: Path
) -> None:
    assert (int8.backend, int8.precision) == ("openvino", "int8")
    assert int8.int8 is not None and int8.int8.calibrated_on == CALIBRATION_TEXTS
    assert LOOSE <= int8.int8.min_cosine <= int8.int8.mean_cosine < 1.0
    assert f"min cosine {int8.int8.min_cosine:.4f}" in int8.precision_reason
    paragraphs = (p for f in sorted(stdlib_docs.glob("*.md")) for p in f.read_text().split("\n\n"))
    texts = [p for p in paragraphs if len(p) > 40][:48]
    assert cosines(int8.encode_texts(texts), encoder.encode_texts(texts)).min() >= LOOSE


def test_int8_is_part_of_the_fingerprint(int8: Encoder, encoder: Encoder) -> None:
    assert int8.output_options() == {"inference": "int8"}
    assert int8.identity() == encoder.identity()
    ours = fingerprint(int8.identity(), ChunkingConfig(), **int8.output_options())
    assert ours != fingerprint(encoder.identity(), ChunkingConfig(), **encoder.output_options())


def test_int8_is_quantized_once_and_refused_under_the_bar(
    int8: Encoder, int8_world: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert int8.int8 is not None
    with caplog.at_level(logging.INFO, logger="embedpipe.encoding.int8"):
        again = Encoder(ModelConfig(precision="int8", device="cpu", int8_min_cosine=LOOSE))
        strict = int8.int8.min_cosine + 1e-4
        with pytest.raises(ModelError, match=f"int8_min_cosine={strict}"):
            Encoder(ModelConfig(precision="int8", device="cpu", int8_min_cosine=strict))
    assert "quantizing" not in caplog.text
    assert again.int8 == int8.int8


def test_int8_runs_only_when_asked(int8_world: pytest.MonkeyPatch) -> None:
    auto = Encoder(ModelConfig(device="cpu"))
    assert auto.precision != "int8" and "inference" not in auto.output_options()
    with pytest.raises(ModelError, match="OpenVINO backend only"):
        Encoder(ModelConfig(precision="int8", backend="torch", device="cpu"))


def test_the_calibration_sample_is_fixed_varied_and_distinct() -> None:
    sample = calibration_sample(200)
    assert sample == calibration_sample(200)
    assert len(set(sample)) == 200
    lengths = sorted(map(len, sample))
    assert lengths[0] < 80 and lengths[-1] > 800, "short sentences and long passages"
