"""Data sets: one in-memory record per image, readers/writers for VOC, COCO, YOLO, KITTI and TT100K, the
synthetic set, and the data-health scan (``bench.data.health``; ``python -m bench.data.check ROOT``).

The transforms and the torch loader live in ``bench.data.transforms`` and ``bench.data.loader``; they are not
imported here so that reading annotations (the evaluator's path) does not pull in torchvision.
"""

from bench.data.coco import read_coco, to_coco_dict, write_coco
from bench.data.health import DataHealth
from bench.data.kitti import KITTI_CLASSES, read_kitti, write_kitti
from bench.data.records import DetectionDataset, ImageRecord
from bench.data.tt100k import TT100K_45_CLASSES, read_tt100k, write_tt100k
from bench.data.voc import VOC_CLASSES, read_voc, write_voc
from bench.data.yolo import read_yolo, write_yolo

__all__ = [
    "KITTI_CLASSES",
    "TT100K_45_CLASSES",
    "VOC_CLASSES",
    "DataHealth",
    "DetectionDataset",
    "ImageRecord",
    "read_coco",
    "read_kitti",
    "read_tt100k",
    "read_voc",
    "read_yolo",
    "to_coco_dict",
    "write_coco",
    "write_kitti",
    "write_tt100k",
    "write_voc",
    "write_yolo",
]
