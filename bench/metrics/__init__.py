"""The evaluator: COCO metrics equal to pycocotools, VOC devkit AP, PR/ROC curves and confusion matrices."""

from bench.metrics.confusion import ConfusionMatrix
from bench.metrics.detections import DetectionResults
from bench.metrics.evaluation import evaluate
from bench.metrics.result import Curves, EvaluationResult, load_result
from bench.metrics.voc import devkit_ap, match_devkit

__all__ = ["ConfusionMatrix", "Curves", "DetectionResults", "EvaluationResult", "devkit_ap", "evaluate",
           "load_result", "match_devkit"]
