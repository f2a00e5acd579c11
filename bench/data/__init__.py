"""Data sets: one in-memory record per image, readers/writers for VOC, COCO and YOLO, the synthetic set."""

from bench.data.records import DetectionDataset, ImageRecord

__all__ = ["DetectionDataset", "ImageRecord"]
