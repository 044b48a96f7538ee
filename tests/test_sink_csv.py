import numpy as np
import pytest

from runtime import channels
from runtime.sinks.csv import HEADER, CsvSink, format_row, parse_timecode, read_take, timecode, write_take

from .conftest import SHARED


def test_timecode_format():
    assert timecode(12 * 3600 + 27 * 60 + 47 + 47.169 / 60) == "12:27:47:47.169"
    assert parse_timecode("12:27:47:47.169") == pytest.approx(12 * 3600 + 27 * 60 + 47 + 47.169 / 60)
    assert timecode(0.0) == "00:00:00:00.000"


def test_header_and_row_shape():
    assert HEADER.split(",")[:3] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft"]
    assert len(HEADER.split(",")) == 63
    row = format_row(np.zeros(61, np.float32), 1.0)
    assert row.startswith("00:00:01:00.000,61,0.0000000000,")


def test_written_take_reads_back_identically(tmp_path):
    rng = np.random.default_rng(1)
    frames = channels.clamp(rng.uniform(-1, 1, (90, 61)).astype(np.float32))
    path = tmp_path / "take.csv"
    write_take(path, frames, 60.0, start=3600.0)
    take = read_take(path)
    np.testing.assert_allclose(take.values, frames, atol=1e-9)
    np.testing.assert_allclose(take.times, np.arange(90) / 60.0, atol=1e-6)


def test_streaming_sink_writes_every_frame_in_order(tmp_path):
    path = tmp_path / "live.csv"
    sink = CsvSink(str(path), 60.0)
    for i in range(120):
        sink.send(np.full(61, i / 200, np.float32), i, 100.0 + i / 60)
    sink.close()
    take = read_take(path)
    assert len(take.values) == 120 and sink.dropped == 0
    np.testing.assert_allclose(take.values[:, 0], np.arange(120) / 200, atol=1e-7)


def test_real_export_columns_by_name_gaps_and_clamping():
    path = SHARED / "data" / "recordings" / "alexdjulin" / "S88-001.csv"
    if not path.exists():
        pytest.skip("shared recordings not present")
    take = read_take(path)
    assert take.values.shape[1] == 61
    lost = ~take.valid
    assert lost.sum() == 277  # tracking-loss rows become gaps, as the README says
    ok = take.values[take.valid]
    assert ok[:, :52].min() >= 0.0 and ok[:, :52].max() <= 1.0
    assert np.abs(ok[:, 52:]).max() <= 1.0
    dt = np.diff(take.times)
    assert np.median(dt) == pytest.approx(1 / 30, abs=1e-3)  # 30 Hz on a 60 fps timecode
    # JawLeft/JawRight and MouthLeft/MouthRight are swapped in the file's column order
    text = path.read_text().splitlines()
    header = text[0].split(",")
    first = next(r.split(",") for r in text[1:] if r.split(",")[1] == "61")
    assert float(first[header.index("JawLeft")]) == pytest.approx(
        take.values[take.valid][0, channels.INDEX["JawLeft"]], abs=1e-6)
