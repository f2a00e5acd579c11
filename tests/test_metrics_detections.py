"""Reading and writing COCO results files: accepted spellings, exact numbers, and every bad entry named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.data.records import DetectionDataset, ImageRecord
from bench.errors import BenchInputError
from bench.metrics import DetectionResults, native


@pytest.fixture()
def gt(tmp_path: Path) -> DetectionDataset:
    records = [ImageRecord(11, "a/x.jpg", 100, 80, boxes=[[0, 0, 10, 10]], labels=[0]),
               ImageRecord(12, "y.jpg", 100, 80, boxes=[[5, 5, 20, 20]], labels=[1])]
    return DetectionDataset(["cat", "dog"], records, tmp_path / "images", category_ids=[3, 8])


def write(tmp_path: Path, data: object, name: str = "dt.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_ids_names_and_exact_boxes(tmp_path: Path, gt: DetectionDataset) -> None:
    entries = [{"image_id": 12, "category_id": 8, "bbox": [0.1, 0.2, 0.2, 0.3], "score": 0.5},
               {"file_name": "a/./x.jpg", "category_name": "dog", "bbox": [1, 2, 3, 4], "score": 1}]
    dets = DetectionResults.from_coco_json(write(tmp_path, entries), gt)
    assert dets.image_id.tolist() == [12, 11] and dets.label.tolist() == [1, 1]
    assert dets.xywh[0].tolist() == [0.1, 0.2, 0.2, 0.3]  # as written, although 0.1 + 0.2 - 0.1 != 0.2
    assert dets.boxes[0].tolist() == [0.1, 0.2, 0.1 + 0.2, 0.2 + 0.3] and dets.score.tolist() == [0.5, 1.0]
    again = DetectionResults.from_coco_json(dets.to_coco_json(tmp_path / "out.json", gt), gt)
    for field in ("image_id", "label", "boxes", "score", "xywh"):
        np.testing.assert_array_equal(getattr(again, field), getattr(dets, field))
    assert json.loads((tmp_path / "out.json").read_text())[0]["category_id"] == 8


def test_coco_dict_with_annotations_is_accepted(tmp_path: Path, gt: DetectionDataset) -> None:
    data = {"annotations": [{"image_id": 11, "category_id": 3, "bbox": [1, 1, 2, 2], "score": 0.3}]}
    assert len(DetectionResults.from_coco_json(write(tmp_path, data), gt)) == 1


GOOD = {"image_id": 11, "category_id": 3, "bbox": [1, 1, 2, 2], "score": 0.3}


@pytest.mark.parametrize(("bad", "field", "words"), [
    ({"image_id": 99}, "image_id", "not in the ground truth"),
    ({"image_id": 1.5}, "image_id", "not an integer"),
    ({"image_id": None, "file_name": "nope.jpg"}, "file_name", "not in the ground truth"),
    ({"image_id": None, "file_name": "../escape.jpg"}, "file_name", "escapes the data root"),
    ({"image_id": None}, "image_id", "needs 'image_id' or 'file_name'"),
    ({"category_id": 4}, "category_id", "not a ground-truth class"),
    ({"category_id": None, "category_name": "cow"}, "category_id", "'cow' is not a ground-truth class"),
    ({"bbox": [1, 1, 2]}, "bbox", "a list of 4 numbers"),
    ({"bbox": [1, 1, "2", 2]}, "bbox", "a list of 4 numbers"),
    ({"bbox": [1, float("inf"), 2, 2]}, "bbox", "NaN or infinite"),
    ({"bbox": None}, "bbox", "missing"),
    ({"score": float("nan")}, "score", "NaN or infinite"),
    ({"score": "high"}, "score", "a number"),
    ({"score": True}, "score", "a number"),
])
def test_bad_entry_is_named(tmp_path: Path, gt: DetectionDataset, bad: dict, field: str, words: str) -> None:
    entries = [GOOD, GOOD, {k: v for k, v in {**GOOD, **bad}.items() if v is not None}]
    with pytest.raises(BenchInputError) as info:
        DetectionResults.from_coco_json(write(tmp_path, entries), gt)
    err = info.value
    assert (err.path, err.entry, err.field) == (str(tmp_path / "dt.json"), 2, field)
    assert words in str(err) and "\n" not in str(err)


@pytest.mark.parametrize(("text", "words"), [
    ('[{"image_id": 11,', "malformed JSON at line 1"),
    ('{"images": []}', "expected a JSON list"),
    ("[1]", "expected an object"),
])
def test_bad_file_is_named(tmp_path: Path, gt: DetectionDataset, text: str, words: str) -> None:
    with pytest.raises(BenchInputError, match=words) as info:
        DetectionResults.from_coco_json(write(tmp_path, text), gt)
    assert info.value.path == str(tmp_path / "dt.json")


def test_unreadable_file(tmp_path: Path, gt: DetectionDataset) -> None:
    with pytest.raises(BenchInputError, match="cannot read"):
        DetectionResults.from_coco_json(tmp_path / "missing.json", gt)


@pytest.mark.parametrize("kernels", ["1", "0"])  # the compiled reader, ultrafast-pycocotools' reader
def test_fast_reader_equals_checked_reader(tmp_path: Path, gt: DetectionDataset,
                                           monkeypatch: pytest.MonkeyPatch, kernels: str) -> None:
    monkeypatch.setenv(native.ENV, kernels)
    rng = np.random.default_rng(0)
    entries = [{"image_id": int(rng.choice([11, 12])), "category_id": int(rng.choice([3, 8])),
                "bbox": np.round(rng.uniform(0.5, 50, 4), 3).tolist(), "score": float(rng.random())}
               for _ in range(50)]
    path = write(tmp_path, entries)
    from bench.metrics import detections
    assert detections._fast_rows(path, gt) is not None  # the common layout takes the fast path
    fast = DetectionResults.from_coco_json(path, gt)
    monkeypatch.setattr(detections, "_fast_rows", lambda *_: None)
    slow = DetectionResults.from_coco_json(path, gt)
    for field in ("image_id", "label", "boxes", "score", "xywh"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))


def test_results_parsed_beside_equal_the_file_read_alone(tmp_path: Path, gt: DetectionDataset,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread's columns are the compiled reader's; without kernels there are none, and the file is read
    its other way."""
    from bench.metrics.detections import read_columns_beside
    entries = [{"image_id": 12, "category_id": 8, "bbox": [0.1, 0.2, 0.2, 0.3], "score": 0.5},
               {"image_id": 11, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.25}]
    path = write(tmp_path, entries)
    alone = DetectionResults.from_coco_json(path, gt)
    parsed = read_columns_beside(path)
    columns = parsed()
    if native.available():
        assert columns is not None and all(np.array_equal(a, b) for a, b in
                                           zip(columns, native.read_results(path), strict=True))
    beside = DetectionResults.from_coco_json(path, gt, parsed)
    for field in ("image_id", "label", "boxes", "score", "xywh"):
        np.testing.assert_array_equal(getattr(beside, field), getattr(alone, field))
    monkeypatch.setenv(native.ENV, "0")
    assert read_columns_beside(path)() is None


@pytest.mark.skipif(not native.available(), reason="compiled kernels not built")
def test_a_file_the_thread_could_not_read_is_not_parsed_again(tmp_path: Path, gt: DetectionDataset,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.metrics import detections
    calls = []
    monkeypatch.setattr(native, "read_results", lambda path: calls.append(path))  # (None: not this layout)
    path = write(tmp_path, [{"image_id": 12, "category_id": 8, "bbox": [1, 2, 3, 4], "score": 0.5}])
    dets = DetectionResults.from_coco_json(path, gt, detections.read_columns_beside(path))
    assert len(calls) == 1 and len(dets) == 1


@pytest.mark.parametrize("entry", [{"image_id": 11, "category_id": 3, "bbox": [1, 2, 3, 4]},
                                   {"image_id": 11, "category_id": 3, "bbox": [1, 2, 3, 4], "score": None},
                                   {"image_id": 11.0, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1},
                                   {"image_id": 13, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 1},
                                   {"image_id": 11, "category_id": 4, "bbox": [1, 2, 3, 4], "score": 1}])
@pytest.mark.parametrize("kernels", ["1", "0"])
def test_fast_reader_leaves_unusual_files_to_the_checked_reader(tmp_path: Path, gt: DetectionDataset,
                                                                monkeypatch: pytest.MonkeyPatch, entry: dict,
                                                                kernels: str) -> None:
    """A missing or null score (the Rust reader reads both as 0, here beside a true 0), a float id, an
    unknown image or class: the checked path reads the file and names the problem."""
    monkeypatch.setenv(native.ENV, kernels)
    from bench.metrics import detections
    zero = {"image_id": 12, "category_id": 8, "bbox": [1, 2, 3, 4], "score": 0}
    path = write(tmp_path, [zero, entry])
    assert detections._fast_rows(write(tmp_path, [zero], "zero.json"), gt) is not None  # a true 0 alone
    assert detections._fast_rows(path, gt) is None
    if entry.get("score") is None:
        with pytest.raises(BenchInputError, match=r"\[1\] field 'score': missing"):
            DetectionResults.from_coco_json(path, gt)


def test_id_positions_by_table_and_by_search() -> None:
    from bench.metrics.groups import index_of, position_in
    for keys in (np.array([30, 10, 20]), np.array([3 * 10**9, 10, 20])):  # narrow: table; wide: search
        np.testing.assert_array_equal(index_of(keys, keys[[2, 0, 0, 1]]), [2, 0, 0, 1])
        np.testing.assert_array_equal(position_in(keys, keys[[2, 0, 0, 1]]), [2, 0, 0, 1])
        for missing in (15, 5, 10**12, -1):
            assert index_of(keys, np.array([keys[0], missing])) is None
    assert index_of(np.zeros(0, np.int64), np.array([1])) is None
    keys = np.arange(10, 40, 3)  # a value not among the keys: the binary search's answer, as before
    np.testing.assert_array_equal(position_in(keys, np.array([11, 13])), np.searchsorted(keys, [11, 13]))


@pytest.mark.parametrize("chunk", [7, 8, 11, 64, 1 << 20])
def test_score_keys_are_counted_across_read_boundaries(tmp_path: Path, chunk: int) -> None:
    from bench.metrics.detections import _score_keys
    entries = (b'{"score": 0.5, "x": null}' if i % 7 == 0 else b'{"score":1}' for i in range(300))
    text = b"[" + b",".join(entries)
    for data, null in ((text + b"]", True), (text.replace(b"null", b"1") + b"]", False)):
        path = write(tmp_path, data.decode())
        assert _score_keys(path, chunk) == (data.count(b'"score"'), null)


NUMBERS = ["0", "-0", "-0.0", "0.1", "1e-5", "1E+3", "2.5e2", "123456789012345678901", "9007199254740993",
           "0.30000000000000004", "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308", "-7.25",
           "1e22", "1e23", "0.000001234567890123456789", "4.35", "12345678901234567.5", "1e-400"]


@pytest.mark.skipif(not native.available(), reason="compiled kernels not built")
def test_compiled_reader_reads_every_number_as_python_does(tmp_path: Path) -> None:
    """Each number is the double Python's json reads (integers, -0, long mantissas, far exponents,
    subnormals), whatever the key order, spacing and other keys (skipped whatever their value)."""
    rng = np.random.default_rng(0)
    texts = NUMBERS + [repr(float(v)) for v in rng.standard_normal(200) * 10.0 ** rng.integers(-12, 12, 200)]
    entries, lines = [], []
    for i in range(0, len(texts) - 4, 2):
        bbox, score = texts[i:i + 4], texts[i + 4]
        fields = [f'"image_id" : {i}', f'"category_id":{-i}', f'"bbox":[ {", ".join(bbox)} ]',
                  f'"score":{score}', '"extra": {"a": [1, "x\\"y", null, true, false, {}], "b": []}']
        order = rng.permutation(len(fields))
        lines.append("{" + ",\n\t".join(fields[k] for k in order) + "}")
        entries.append(json.loads(lines[-1]))
    path = write(tmp_path, " [" + ",\r\n".join(lines) + "] \n")
    image_id, category_id, xywh, score = native.read_results(path)
    np.testing.assert_array_equal(image_id, [e["image_id"] for e in entries])
    np.testing.assert_array_equal(category_id, [e["category_id"] for e in entries])
    expected = np.array([[*e["bbox"], e["score"]] for e in entries], dtype=np.float64)
    assert np.c_[xywh, score].view(np.int64).tolist() == expected.view(np.int64).tolist()  # bits, -0.0 too
    assert native.read_results(write(tmp_path, "[]", "empty.json"))[0].shape == (0,)


@pytest.mark.skipif(not native.available(), reason="compiled kernels not built")
@pytest.mark.parametrize("text", [
    '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]}]',  # no score
    '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": null}]',
    '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": NaN}]',
    '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 1, "score": 2}]',
    '[{"image_id": 1.0, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 1}]',
    '[{"image_id": "1", "category_id": 2, "bbox": [1, 2, 3, 4], "score": 1}]',
    '[{"image_id": 01, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 1}]',
    '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3], "score": 1}]',
    '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": .5}]',
    '[{"image\\u005fid": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 1}]',
    '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 1}',  # unterminated
    '{"annotations": []}', '\ufeff[]', '[] x', ''])
def test_compiled_reader_leaves_other_files_to_the_checked_reader(tmp_path: Path, text: str) -> None:
    assert native.read_results(write(tmp_path, text)) is None
    assert native.read_results(tmp_path / "missing.json") is None
    assert native.read_results(tmp_path) is None  # a folder
