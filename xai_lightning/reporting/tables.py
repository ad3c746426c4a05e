"""Result tables for report.md and papers: "mean ± std" pivots and writers for CSV, Markdown and LaTeX.

Markdown and LaTeX are written here (no tabulate or jinja2 needed), with the number of seeds in the caption.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from xai_lightning.data.splits import SPLITS
from xai_lightning.metrics.names import OVERALL
from xai_lightning.reporting.seeds import MISSING, mean_std_label

__all__ = ["mean_std_table", "seeds_note", "write_table", "to_markdown", "to_latex", "latex_escape"]

# One pass over the text, so the backslash of an inserted command is never escaped again.
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # ± and — are spelled out so the file compiles without a UTF-8 aware setup.
    "±": r"$\pm$",
    "—": "---",
}
_LATEX_TABLE = str.maketrans(_LATEX_SPECIALS)


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular cell or caption.

    Example:
        >>> print(latex_escape("input_x_gradient: 50% & 0.512 ± 0.034"))
        input\\_x\\_gradient: 50\\% \\& 0.512 $\\pm$ 0.034
    """
    return str(text).translate(_LATEX_TABLE)


def _order_key(column: str, order: Mapping[str, Sequence[str]] | None, overall_name: str):
    """Sort key for the values of one key column: given order, else splits in ``SPLITS`` order and "overall" first."""
    given = list(order.get(column, ())) if order else []
    if given:
        rank = {v: i for i, v in enumerate(given)}
    elif column == "split":
        rank = {v: i for i, v in enumerate(SPLITS)}
    elif column == "class":
        rank = {overall_name: 0}
    else:
        rank = {}
    # Values without a rank follow the ranked ones, in natural order.
    return lambda values: values.map(lambda v: (0, rank[v], "") if v in rank else (1, 0, str(v)))


def seeds_note(across: pd.DataFrame) -> str:
    """Caption text with the number of seeds behind a table of ``across_seeds`` rows.

    Example:
        >>> seeds_note(pd.DataFrame({"n_seeds": [10, 10]})), seeds_note(pd.DataFrame({"n_seeds": [4, 5]}))
        ('mean ± std over 10 seeds', 'mean ± std over 4–5 seeds (fewer where a seed has no value)')
    """
    counts = across["n_seeds"]
    counts = counts[counts > 0]
    if counts.empty:
        return "mean ± std over 0 seeds"
    low, high = int(counts.min()), int(counts.max())
    if low == high:
        return f"mean ± std over {high} seed{'s' if high != 1 else ''}"
    return f"mean ± std over {low}–{high} seeds (fewer where a seed has no value)"


def mean_std_table(
    across: pd.DataFrame,
    rows: str | Sequence[str],
    columns: str | Sequence[str],
    digits: int = 3,
    order: Mapping[str, Sequence[str]] | None = None,
    overall_name: str = OVERALL,
) -> pd.DataFrame:
    """Pivot of "mean ± std" labels from ``across_seeds`` output.

    The row keys stay ordinary columns (first), followed by one column per
    value of ``columns``. Order: as given in ``order`` (e.g.
    ``{"method": ["saliency", "gradcam"]}``, unlisted values after, sorted);
    otherwise splits train/val/test, class ``overall`` first then alphabetical,
    anything else sorted. Missing combinations read "—". The caption text with
    the number of seeds is stored in ``table.attrs["seeds_note"]``, which
    ``write_table`` puts into the caption. Filter ``across`` to one metric (and
    experiment) first: every cell must come from exactly one row.

    Example:
        >>> across = pd.DataFrame({"split": ["test", "train"], "class": "overall", "method": "x",
        ...     "mean": [0.5, 0.75], "std": [0.1, float("nan")], "n_seeds": 10})
        >>> table = mean_std_table(across, rows=["split", "class"], columns="method")
        >>> table
           split    class              x
        0  train  overall          0.750
        1   test  overall  0.500 ± 0.100
        >>> table.attrs["seeds_note"]
        'mean ± std over 10 seeds'
    """
    rows = [rows] if isinstance(rows, str) else list(rows)
    columns = [columns] if isinstance(columns, str) else list(columns)
    keys = rows + columns
    missing = [c for c in keys + ["mean", "std", "n_seeds"] if c not in across.columns]
    if missing:
        raise ValueError(f"across lacks column(s) {missing}; it has {list(across.columns)}")
    duplicated = across.duplicated(keys)
    if duplicated.any():
        id_columns = ("experiment", "metric", "split", "class", "method")
        varying = [c for c in across.columns if c not in keys and c in id_columns]
        raise ValueError(
            f"{int(duplicated.sum())} cell(s) of rows={rows} × columns={columns} have several values; "
            f"filter `across` first (candidates: {varying})"
        )
    frame = across.assign(_label=[mean_std_label(m, s, digits) for m, s in zip(across["mean"], across["std"])])
    wide = frame.pivot(index=rows, columns=columns, values="_label")

    def sort_index(index: pd.Index) -> pd.Index:
        return _order_key(index.name, order, overall_name)(index) if index.name else index

    wide = wide.sort_index(axis=0, key=sort_index).sort_index(axis=1, key=sort_index)
    if isinstance(wide.columns, pd.MultiIndex):
        wide.columns = [" / ".join(str(v) for v in col) for col in wide.columns]
    else:
        wide.columns = [str(c) for c in wide.columns]
    table = wide.fillna(MISSING).reset_index()
    table.columns.name = None
    table.attrs["seeds_note"] = seeds_note(across)
    return table


def _cell_text(value: object, float_digits: int) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return MISSING if math.isnan(float(value)) else f"{float(value):.{float_digits}f}"
    if value is None or value is pd.NA:
        return MISSING
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def to_markdown(frame: pd.DataFrame, caption: str | None = None, float_digits: int = 3) -> str:
    """GitHub Markdown table, the caption as a line above it; numbers right-aligned.

    Example:
        >>> print(to_markdown(pd.DataFrame({"method": ["a|b"], "tko": [0.51234]}), caption="TKO, mean over 2 seeds"))
        TKO, mean over 2 seeds
        <BLANKLINE>
        | method |   tko |
        | :----- | ----: |
        | a\\|b   | 0.512 |
        <BLANKLINE>
    """
    header = [str(c).replace("|", "\\|") for c in frame.columns]
    body = [
        [_cell_text(v, float_digits).replace("|", "\\|").replace("\n", " ") for v in row]
        for row in frame.itertuples(index=False, name=None)
    ]
    numeric = [_is_numeric(frame[c]) for c in frame.columns]
    widths = [max([3, len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    # GitHub alignment markers: ---: right (numbers), :--- left (text).
    markers = [("-" * (w - 1) + ":") if num else (":" + "-" * (w - 1)) for w, num in zip(widths, numeric)]
    rule = "| " + " | ".join(markers) + " |"
    lines = ([caption, ""] if caption else []) + [line(header), rule] + [line(r) for r in body]
    return "\n".join(lines) + "\n"


def to_latex(frame: pd.DataFrame, caption: str | None = None, float_digits: int = 3, label: str | None = None) -> str:
    r"""LaTeX tabular with booktabs rules (needs ``\usepackage{booktabs}``), every cell escaped.

    With a caption the tabular sits in a ``table`` float with ``\caption``; the
    caption is also written as a comment on the first line, for readers of the file.

    Example:
        >>> print(to_latex(pd.DataFrame({"method": ["input_x_gradient"], "tko": [0.5]})))
        \begin{tabular}{lr}
        \toprule
        method & tko \\
        \midrule
        input\_x\_gradient & 0.500 \\
        \bottomrule
        \end{tabular}
        <BLANKLINE>
    """
    spec = "".join("r" if _is_numeric(frame[c]) else "l" for c in frame.columns)
    header = " & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\"
    body = [
        " & ".join(latex_escape(_cell_text(v, float_digits)) for v in row) + r" \\"
        for row in frame.itertuples(index=False, name=None)
    ]
    tabular = [
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header, r"\midrule", *body, r"\bottomrule", r"\end{tabular}"
    ]
    if caption is None:
        return "\n".join(tabular) + "\n"
    lines = [
        f"% {caption}",
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        *([rf"\label{{{label}}}"] if label else []),
        *tabular,
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame,
    out_dir: str | Path,
    name: str,
    *,
    caption: str | None = None,
    float_digits: int = 3,
) -> dict[str, Path]:
    """Write ``frame`` as ``name.csv`` (full precision), ``name.md`` and ``name.tex``.

    The caption combines ``caption`` with ``frame.attrs["seeds_note"]`` (set by
    ``mean_std_table``), so the number of seeds shows above the Markdown table
    and in the LaTeX ``\\caption``. A named index is written as leading columns.

    Returns:
        ``{"csv": path, "md": path, "tex": path}``.

    Example:
        >>> import tempfile
        >>> paths = write_table(pd.DataFrame({"a": [1]}), tempfile.mkdtemp(), "t", caption="demo")
        >>> sorted(paths), paths["md"].read_text().splitlines()[0]
        (['csv', 'md', 'tex'], 'demo')
    """
    note = frame.attrs.get("seeds_note")
    full_caption = caption
    if note and not (caption and note in caption):
        full_caption = f"{caption}; {note}" if caption else note
    if any(n is not None for n in frame.index.names):
        frame = frame.reset_index()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{name}.csv", "md": out_dir / f"{name}.md", "tex": out_dir / f"{name}.tex"}
    frame.to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(frame, full_caption, float_digits), encoding="utf-8")
    paths["tex"].write_text(to_latex(frame, full_caption, float_digits, label=f"tab:{name}"), encoding="utf-8")
    return paths
