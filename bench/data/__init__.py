"""Data sets: one in-memory record per image, readers/writers for VOC, COCO and YOLO, the synthetic set.

The transforms and the torch loader live in ``bench.data.transforms`` and ``bench.data.loader``; they are not
imported here so that reading annotations (the evaluator's path) does not pull in torchvision.
"""

from bench.data.coco import read_coco, to_coco_dict, write_coco
from bench.data.records import DetectionDataset, ImageRecord
from bench.data.voc import VOC_CLASSES, read_voc, write_voc
from bench.data.yolo import read_yolo, write_yolo

__all__ = [
    "VOC_CLASSES",
    "DetectionDataset",
    "ImageRecord",
    "read_coco",
    "read_voc",
    "read_yolo",
    "to_coco_dict",
    "write_coco",
    "write_voc",
    "write_yolo",
]
