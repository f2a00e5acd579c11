"""Score a COCO results file against COCO or VOC ground truth and write every metric to a folder.

    python -m bench.evaluate --gt GT --dt DT --out DIR [--split test] [--image-root R]
        [--protocols coco,aitod,tinyperson,tt100k,visdrone] [--max-dets coco=1,10,500] [--bootstrap 1000]

GT is a COCO instances JSON, a VOCdevkit year root (with ``--split``) or a folder of VOC XML files. Bad input
exits with status 2 and one line on stderr naming the file (and the entry or field), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # No linear algebra runs here, but NumPy's OpenBLAS starts a worker thread that spins for its first tenth
    # of a second beside the evaluation (measured: 0.1-0.15 s of CPU on 2 cores). Set before NumPy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bench.data.coco import CocoAnnotations, read_coco_annotations
from bench.data.records import DetectionDataset
from bench.data.voc import read_voc
from bench.errors import BenchInputError
from bench.metrics import DetectionResults, EvaluationResult, evaluate
from bench.metrics.detections import read_columns_beside
from bench.metrics.protocols import PROTOCOLS
from bench.metrics.small_objects import DEFAULT_SETTINGS, SmallObjectSettings


def read_ground_truth(gt: Path, split: str | None = None, image_root: Path | None = None
                      ) -> tuple[DetectionDataset, CocoAnnotations | None]:
    """The data set, plus the annotations' columns when GT is a COCO file (its exact boxes feed the COCO
    metrics)."""
    if not gt.exists():
        raise BenchInputError(gt, "ground truth not found")
    if gt.is_dir():
        ds = read_voc(gt, split=split)
        if image_root is not None:
            ds.image_root = image_root
        return ds, None
    if split is not None:
        raise BenchInputError(gt, "--split applies to a VOCdevkit root, not to a COCO file")
    return read_coco_annotations(gt, image_root=image_root)  # the data set and the COCO metrics' boxes


def run(gt: Path, dt: Path, out: Path, *, split: str | None = None, image_root: Path | None = None,
        confusion_score: float = 0.25, confusion_iou: float = 0.5,
        small_objects: SmallObjectSettings | None = DEFAULT_SETTINGS) -> EvaluationResult:
    parsed = read_columns_beside(dt)  # the results file is parsed while the ground truth is read
    ds, coco_gt = read_ground_truth(gt, split, image_root)
    dets = DetectionResults.from_coco_json(dt, ds, parsed)
    result = evaluate(ds, dets, confusion_score=confusion_score, confusion_iou=confusion_iou, coco_gt=coco_gt,
                      small_objects=small_objects)
    result.settings.update({"gt": str(gt), "dt": str(dt), "split": split})
    result.save(out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=Path, required=True,
                        help="COCO JSON, VOCdevkit year root or folder of XML")
    parser.add_argument("--dt", type=Path, required=True, help="detections, COCO results JSON")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--split", help="VOCdevkit split (ImageSets/Main/<split>.txt)")
    parser.add_argument("--image-root", type=Path, help="folder the images' file_name values are relative to")
    parser.add_argument("--confusion-score", type=float, default=0.25,
                        help="confusion matrix score threshold")
    parser.add_argument("--confusion-iou", type=float, default=0.5, help="confusion matrix IoU threshold")
    parser.add_argument("--protocols", default="coco,aitod",
                        help=f"size-bucket protocols, comma-separated, from {','.join(PROTOCOLS)}")
    parser.add_argument("--max-dets", action="append", default=[], metavar="PROTOCOL=M1,M2,...",
                        help="maxDets of one protocol, e.g. coco=1,10,500 (repeatable)")
    parser.add_argument("--bootstrap", type=int, default=SmallObjectSettings.bootstrap,
                        help="bootstrap resamples of the images for the intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (same seed = paired resamples)")
    parser.add_argument("--no-nwd", action="store_true", help="skip the NWD tolerance curves")
    parser.add_argument("--no-tide", action="store_true", help="skip the TIDE breakdown")
    args = parser.parse_args(argv)
    protocols = tuple(p for p in args.protocols.split(",") if p)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        parser.error(f"unknown protocol {unknown[0]!r}; known: {', '.join(PROTOCOLS)}")
    max_dets: dict[str, tuple[int, ...]] = {}
    for item in args.max_dets:
        name, _, values = item.partition("=")
        try:
            max_dets[name] = tuple(int(v) for v in values.split(","))
        except ValueError:
            parser.error(f"--max-dets {item!r}: expected PROTOCOL=M1,M2,...")
    settings = SmallObjectSettings(protocols=protocols, max_dets=max_dets or None, nwd=not args.no_nwd,
                                   tide=not args.no_tide, bootstrap=args.bootstrap, seed=args.seed)
    try:
        result = run(args.gt, args.dt, args.out, split=args.split, image_root=args.image_root,
                     confusion_score=args.confusion_score, confusion_iou=args.confusion_iou,
                     small_objects=settings)
    except BenchInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    coco, voc = result.coco, result.voc
    print(f"AP {coco['AP']:.4f}  AP50 {coco['AP50']:.4f}  APs {coco['APs']:.4f}  VOC mAP(11pt) "
          f"{voc['mAP_11pt']:.4f}  mAP(all) {voc['mAP_allpt']:.4f} -> {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    status = main()
    # Everything is written and closed: leave without the interpreter's teardown of its modules and objects
    # (20-40 ms, a twentieth of a 2,000-image evaluation). An exception out of main() exits the usual way.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
