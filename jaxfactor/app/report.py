"""The demo's report: one self-contained folder with an ``index.html`` that reads offline.

Pieces, each a plain function so that other scripts can build pages too:

* :func:`html_table` -- a real ``<table>`` (a caption, a header row, one row
  per record, numbers right-aligned with their units in the headers), sortable
  by clicking a header (a few lines of inline JavaScript, no library);
* :func:`upscale` -- nearest-neighbour enlargement (no blur) of image tiles;
* :func:`save_png` -- an atomically written PNG;
* :func:`plot_heatmap`, :func:`plot_basis_scatter` -- matplotlib figures (Agg
  canvas, no display) of the factor-change matrix and of the sparsity paper's
  Fig. 2 (samples in the first two principal axes of a layer, coloured by a
  factor, with the PCA and SCA basis vectors drawn);
* :func:`page` -- the HTML document around the sections, with its CSS and
  script inline; every link it holds is relative.
"""
from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .._io import atomic_write

__all__ = ["Column", "html_table", "upscale", "to_uint8", "save_png", "plot_heatmap",
           "plot_basis_scatter", "page", "write_page", "fmt"]


class Column:
    """One table column: ``key`` in the records, ``header`` text, ``unit`` (shown
    under the header), ``digits`` for floats, ``numeric`` (sorted as a number)."""

    def __init__(self, key: str, header: str, unit: str = "", digits: int = 3,
                 numeric: bool | None = None):
        self.key, self.header, self.unit, self.digits = key, header, unit, digits
        self.numeric = numeric


def fmt(value, digits: int = 3) -> str:
    """A table cell's text: floats to ``digits`` significant places (scientific when tiny or huge)."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "n/a"
        if v != 0 and (abs(v) < 10 ** -(digits) or abs(v) >= 10 ** 6):
            return f"{v:.{max(digits - 1, 1)}e}"
        return f"{v:.{digits}f}"
    return str(value)


def html_table(columns: Sequence[Column], rows: Sequence[dict], *, caption: str = "",
               table_id: str = "", raw: Sequence[str] = ()) -> str:
    """A sortable HTML ``<table>`` of ``rows`` (dicts) over ``columns``.

    Args:
      columns: the :class:`Column` list. rows: one dict per row.
      caption: the table's ``<caption>`` (escaped). table_id: its ``id``.
      raw: keys whose values are trusted HTML (e.g. an ``<img>``), not escaped.

    Returns:
      The HTML text.
    """
    head = []
    for c in columns:
        unit = f"<br><span class='unit'>{html.escape(c.unit)}</span>" if c.unit else ""
        head.append(f"<th scope='col'>{html.escape(c.header)}{unit}</th>")
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c.key)
            numeric = c.numeric if c.numeric is not None else isinstance(v, (int, float, np.number)) \
                and not isinstance(v, bool)
            text = str(v) if c.key in raw else html.escape(fmt(v, c.digits))
            sort = f" data-sort='{float(v)!r}'" if numeric and v is not None and \
                isinstance(v, (int, float, np.number)) else ""
            cls = " class='num'" if numeric else (f" class='{text}'" if text in ("yes", "no") else "")
            cells.append(f"<td{cls}{sort}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f" id='{html.escape(table_id)}'" if table_id else ""
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f"<div class='wide'><table class='sortable'{ident}>{cap}<thead><tr>{''.join(head)}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def upscale(images: np.ndarray, min_size: int = 96) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(..., H, W, C)`` tiles so that ``min(H, W) >= min_size``.

    Each pixel becomes an ``f x f`` block, ``f = ceil(min_size / min(H, W))``
    (no interpolation, so no blur).
    """
    h, w = images.shape[-3], images.shape[-2]
    f = max(1, -(-min_size // min(h, w)))
    return images.repeat(f, axis=-3).repeat(f, axis=-2)


def to_uint8(images: np.ndarray, value_range=(-1.0, 1.0)) -> np.ndarray:
    """Float images in ``value_range`` -> uint8 (rounded, clipped)."""
    lo, hi = value_range
    return np.clip((np.asarray(images, np.float64) - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)


def save_png(array: np.ndarray, path: str | os.PathLike) -> str:
    """Write a ``(H, W)`` or ``(H, W, 3)`` uint8 array as a PNG (atomically); returns the path."""
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    image = Image.fromarray(np.ascontiguousarray(a))
    path = os.fspath(path)
    atomic_write(path, lambda f: image.save(f, format="PNG"), suffix=".png", fsync=False)
    return path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path) -> str:
    fig.tight_layout()
    path = os.fspath(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png"), suffix=".png", fsync=False)
    return path


def plot_heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
                 path: str | os.PathLike, *, title: str = "", unit: str = "") -> str:
    """Heat map of a ``(K, J)`` matrix with its values written in the cells; returns the path."""
    a = np.asarray(matrix, np.float64)
    k, j = a.shape
    fig = _figure(2.0 + 0.8 * j, 1.4 + 0.32 * k)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(a, cmap="viridis", aspect="auto")
    ax.set_xticks(range(j), labels=list(col_labels), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(row_labels), fontsize=7)
    top = np.nanmax(a) if a.size else 0
    for r in range(k):
        for c in range(j):
            ax.text(c, r, f"{a[r, c]:.2g}", ha="center", va="center", fontsize=6,
                    color="black" if a[r, c] > 0.6 * top else "white")
    bar = fig.colorbar(im, ax=ax, fraction=0.05)
    bar.set_label(unit, fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save_figure(fig, path)


def plot_basis_scatter(points: np.ndarray, colours: Sequence[np.ndarray],
                       colour_names: Sequence[str], bases: dict, path: str | os.PathLike, *,
                       title: str = "") -> str:
    """The sparsity paper's Fig. 2: samples in a 2-D plane with basis vectors drawn.

    Args:
      points: ``(N, 2)`` coordinates (e.g. scores on the first two PCA axes).
      colours: per panel, ``(N,)`` values to colour the samples by.
      colour_names: per panel, the colour bar's label.
      bases: ``{name: (2, 2) array}``, rows the basis vectors in the plane's
        coordinates (drawn as arrows from the mean, scaled to the data's spread).
      path: PNG to write. title: the figure's title.

    Returns:
      The path written.
    """
    pts = np.asarray(points, np.float64)
    n_panels = len(colours)
    fig = _figure(4.6 * n_panels, 4.2)
    centre = pts.mean(axis=0)
    spread = 2.0 * pts.std(axis=0).max()
    styles = (("crimson", "-"), ("black", "--"), ("navy", ":"))
    for p, (values, name) in enumerate(zip(colours, colour_names)):
        ax = fig.add_subplot(1, n_panels, p + 1)
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=values, s=6, cmap="viridis", alpha=0.8)
        fig.colorbar(sc, ax=ax, fraction=0.05).set_label(name, fontsize=8)
        for (label, basis), (colour, style) in zip(bases.items(), styles):
            b = np.asarray(basis, np.float64)
            for i, vec in enumerate(b):
                v = vec / (np.linalg.norm(vec) or 1.0) * spread
                ax.annotate("", xy=centre + v, xytext=centre,
                            arrowprops=dict(arrowstyle="->", color=colour, lw=2, ls=style))
                ax.text(*(centre + 1.08 * v), f"{label} {i + 1}", color=colour, fontsize=8)
        ax.set_xlabel("PCA axis 1 score", fontsize=8)
        ax.set_ylabel("PCA axis 2 score", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(title, fontsize=9)
    return _save_figure(fig, path)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:0 12px;color:#222}
h1{font-size:1.5em}h2{border-top:2px solid #ccc;padding-top:8px}
table{border-collapse:collapse;margin:8px 0 16px}caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f2f2f2;cursor:pointer;vertical-align:bottom}
td.num{text-align:right;font-variant-numeric:tabular-nums}.unit{font-weight:normal;color:#666;font-size:.85em}
td.yes{background:#dff3df}td.no{background:#f8dede}
table.grid td,table.grid th{border:none;padding:1px}table.grid th{cursor:default;background:none;font-size:.85em}
table.grid th.row{text-align:right;max-width:160px}
img.px{image-rendering:pixelated;image-rendering:crisp-edges;display:block}
figure{display:inline-block;vertical-align:top;margin:6px}figcaption{font-size:.85em;color:#444;max-width:640px}
section{margin-bottom:24px}.wide{overflow-x:auto}
"""

_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var table = th.closest('table'), body = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
    rows.sort(function(a, b){
      var x = a.cells[idx], y = b.cells[idx];
      var nx = x.dataset.sort, ny = y.dataset.sort;
      var r = (nx !== undefined && ny !== undefined) ? parseFloat(nx) - parseFloat(ny)
              : x.textContent.localeCompare(y.textContent);
      return asc ? r : -r;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def page(title: str, sections: Sequence[str]) -> str:
    """The HTML document: ``title``, the ``sections`` (HTML fragments), inline CSS and script."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "".join(sections)
            + f"<script>{_SCRIPT}</script></body></html>")


def write_page(path: str | os.PathLike, title: str, sections: Sequence[str]) -> Path:
    """Write :func:`page` to ``path`` atomically; returns the path."""
    from .._io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, page(title, sections))
    return path
