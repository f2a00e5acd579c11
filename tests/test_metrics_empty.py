"""A model with no detection at all (early training, a high score threshold) scores AP 0, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.data.coco import read_coco
from bench.data.synth import generate
from bench.metrics import DetectionResults, evaluate


def test_no_detections_give_pycocotools_zeros(tmp_path: Path):
    paths = generate(tmp_path, images=10, seed=0, image_size=64)
    gt = read_coco(paths["coco_test"])
    empty = DetectionResults(image_id=np.zeros(0, np.int64), label=np.zeros(0, np.int64),
                             boxes=np.zeros((0, 4), np.float32), score=np.zeros(0, np.float32))
    result = evaluate(gt, empty)

    reference = COCOeval(COCO(str(paths["coco_test"])), iouType="bbox")
    reference.cocoDt = COCO()  # loadRes refuses an empty list: an empty result set by hand
    reference.cocoDt.dataset = {"images": reference.cocoGt.dataset["images"], "annotations": [],
                                "categories": reference.cocoGt.dataset["categories"]}
    reference.cocoDt.createIndex()
    reference.evaluate(), reference.accumulate(), reference.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    for name, expected in zip(names, reference.stats, strict=True):
        value = result.coco[name]
        assert (np.isnan(value) and expected == -1) or value == max(expected, 0.0), name
    assert result.voc == {"mAP_11pt": 0.0, "mAP_allpt": 0.0}
    assert int(result.confusion.matrix[:, :-1].sum()) == 0  # no detection lands in any class column
