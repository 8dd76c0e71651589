"""Study reports: Markdown, JSON and a PNG plot, each written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["write_atomically", "write_report_files"]


def write_atomically(path: Path, writer) -> None:
    """``writer(tmp)`` writes a temporary file beside ``path``, which is then renamed to
    ``path``: a failure leaves neither a partial file nor the temporary one."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_report_files(out: Path, stem: str, result: dict, markdown: str, plot) -> dict[str, str]:
    """Write ``STEM.md`` (``markdown``), ``STEM.json`` (``result``) and ``STEM.png``
    (``plot(result, path)``) into ``out``, each atomically; the paths written, by kind
    (``markdown``, ``json``, ``plot``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json",
             "plot": out / f"{stem}.png"}
    writers = {
        "markdown": lambda p: p.write_text(markdown),
        "json": lambda p: p.write_text(json.dumps(result, indent=1) + "\n"),
        "plot": lambda p: plot(result, p),
    }
    for key, path in paths.items():
        write_atomically(path, writers[key])
    return {k: str(v) for k, v in paths.items()}
