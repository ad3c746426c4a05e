"""The class vocabulary of MVTec AD hazelnut (``good`` plus four defect types) and the order of the labels.

Reader, generator and data module take class names from here, so that a class is spelled in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Images without a defect: MVTec's ``train/`` holds only these, and they have no mask.
GOOD = "good"

#: The defect types of the hazelnut category, as MVTec AD names its ``test/`` folders.
DEFECT_TYPES: tuple[str, ...] = ("crack", "cut", "hole", "print")


def label_order(class_names: Iterable[str]) -> list[str]:
    """Class names in label order (label ``i`` is the ``i``-th name): sorted, each once.

    >>> label_order(["print", "good", "crack", "good"])
    ['crack', 'good', 'print']
    """
    return sorted(set(class_names))


#: All hazelnut classes in label order.
HAZELNUT_CLASSES: tuple[str, ...] = tuple(label_order([GOOD, *DEFECT_TYPES]))
