"""The data section of the resolved plan: format, splits and the counts that set iterations per epoch."""

from __future__ import annotations

from typing import Any

from bench.suite.spec import Suite

COCO_CLASSES = 80


def data_section(suite: Suite, train_images: int | None, num_classes: int | None) -> dict[str, Any]:
    """The data the plan is for; numbers that need the data set say where they come from."""
    from bench.data.resolve import DEFAULT_SPLITS

    cfg = suite.data
    synthetic = cfg.root is None and not cfg.required
    fmt = "coco" if synthetic else cfg.format
    splits = cfg.splits.get(fmt, DEFAULT_SPLITS[fmt])
    out: dict[str, Any] = {"format": fmt, "synthetic_unless_data_given": synthetic,
                           "train_split": "train" if synthetic else splits.train,
                           "test_split": "test" if synthetic else splits.test,
                           "test_images_limit": cfg.synthetic.test_images if synthetic else cfg.test_images,
                           "root": cfg.root, "env": cfg.env}
    if train_images is not None:
        out["train_images"], out["train_images_source"] = train_images, "the data set"
    elif synthetic:
        out["train_images"], out["train_images_source"] = _synthetic_train_images(suite), "synthetic spec"
    elif cfg.train_images is not None:
        out["train_images"], out["train_images_source"] = cfg.train_images, "the suite (documented size)"
    else:
        out["train_images"], out["train_images_source"] = None, "unknown until the data is read"
    out["num_classes"] = num_classes if num_classes is not None else _num_classes(suite, synthetic)
    return out


def _synthetic_train_images(suite: Suite) -> int:
    """The generator's own split of the synthetic images, so the plan's count is the loader's."""
    from bench.data.synth import DEFAULT_SPLITS, split_bounds

    return len(split_bounds(suite.data.synthetic.images, DEFAULT_SPLITS)["train"])


def _num_classes(suite: Suite, synthetic: bool) -> int | None:
    if suite.data.classes:
        return len(suite.data.classes)
    if synthetic:
        from bench.data.synth import CLASSES

        return len(CLASSES)
    return COCO_CLASSES if suite.data.format == "coco" else None
