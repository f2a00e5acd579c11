"""VOC07+12 merge (``bench.data.merge.merge``): the training set of every VOC paper protocol.

A devkit is assembled from two copies of a generated VOC year folder under different year names, so the
merged split holds the same file names twice: ids must be renumbered, paths must stay loadable, and the
boxes of both parts must all be there, each with its own image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.resolve import _read_voc
from bench.data.synth import CLASSES, generate
from bench.errors import BenchInputError


@pytest.fixture(scope="module")
def devkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    year = generate(out, images=20, seed=3, image_size=64)["voc"]
    root = out / "devkit"
    root.mkdir()
    shutil.copytree(year, root / "VOC2007")
    shutil.copytree(year, root / "VOC2012")
    return root


def test_merge_renumbers_ids_keeps_paths_and_sums_boxes(devkit: Path):
    first = _read_voc(devkit, "VOC2007:train", CLASSES)
    second = _read_voc(devkit, "VOC2012:test", CLASSES)
    merged = _read_voc(devkit, "VOC2007:train+VOC2012:test", CLASSES)

    assert len(merged) == len(first) + len(second)
    ids = [r.image_id for r in merged.records]
    assert len(set(ids)) == len(ids) == len(merged)
    assert sum(len(r.boxes) for r in merged.records) == sum(len(r.boxes) for ds in (first, second)
                                                            for r in ds.records)
    # Each merged record keeps its own part's boxes and opens the right file from the devkit root.
    for rec, src in zip(merged.records, [*first.records, *second.records], strict=True):
        np.testing.assert_array_equal(rec.boxes, src.boxes)
        np.testing.assert_array_equal(rec.labels, src.labels)
        path = merged.image_path(rec)
        assert path.is_file() and path.is_relative_to(devkit)
        with Image.open(path) as img:
            assert img.size == (rec.width, rec.height)
    years = {merged.image_path(r).relative_to(devkit).parts[0] for r in merged.records}
    assert years == {"VOC2007", "VOC2012"}


def test_merge_refuses_parts_with_different_classes(devkit: Path):
    with pytest.raises(BenchInputError, match="disagree on the class list"):
        from bench.data.merge import merge

        merge([_read_voc(devkit, "VOC2007:train", CLASSES),
               _read_voc(devkit, "VOC2012:train", list(reversed(CLASSES)))], devkit, "x")
