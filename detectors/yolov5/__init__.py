"""YOLOv5: the anchor-based v6.x original that seed 000 trains, and ultralytics 8's anchor-free YOLOv5u.

- ``yolov5n`` ... ``yolov5x`` (``detector.YOLOv5Detector``): ultralytics/yolov5 v6.x's
  ``yolov5{n,s,m,l,x}.yaml`` built from ultralytics' blocks, with v5's anchor head, loss (``loss.py``), NMS
  (``nms.py``) and AutoAnchor (``autoanchor.py``).
- ``yolov5nu`` ... ``yolov5xu`` (``yolov5u.YOLOv5uDetector``): ultralytics 8's model, loss and NMS unchanged.

Importing this package registers all ten names.
"""

from detectors.yolov5.detector import YOLOv5Detector
from detectors.yolov5.yolov5u import YOLOv5uDetector

__all__ = ["YOLOv5Detector", "YOLOv5uDetector"]
