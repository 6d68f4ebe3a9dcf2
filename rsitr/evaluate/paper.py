"""The papers' published numbers beside ours, in the layout of their Table 1 (one block per test dataset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rsitr.errors import UserError
from rsitr.evaluate.metrics import METRIC_NAMES
from rsitr.evaluate.report import format_table


@dataclass
class Published:
    """Published metrics ``results[method][dataset][metric]`` and where they come from."""

    source: str = ""
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def row(self, method: str, dataset: str) -> dict[str, float] | None:
        """The paper's metrics of ``method`` on ``dataset``; None when the file lists none (never a guess)."""
        metrics = self.results.get(method, {}).get(dataset)
        if metrics is None:
            return None
        missing = [name for name in METRIC_NAMES if name not in metrics]
        if missing:
            raise UserError(f"published results of {method} on {dataset} lack {', '.join(missing)}; list all of "
                            f"{', '.join(METRIC_NAMES)} or none")
        return {name: float(metrics[name]) for name in METRIC_NAMES}


def load_published(published: str | Path) -> Published:
    """Read a published-results YAML file (see ``configs/paper/published_results.yaml``)."""
    path = Path(published)
    if not path.is_file():
        raise UserError(f"published results file {path} does not exist; pass `published` or create it "
                        f"(see configs/paper/published_results.yaml)", parameters=("published",))
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
        return Published(source=str(raw.get("source", "")), results=dict(raw.get("results") or {}))
    except (OmegaConfBaseException, AttributeError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a published-results file ({err})") from err


def paper_table(ours: Mapping[str, Mapping[str, Mapping[str, float]]], published: Published, method: str,
                title: str = "") -> str:
    """Table 1 layout: for each dataset the paper's row of ``method`` (when published) above our rows."""
    blocks = [title] if title else []
    for dataset, rows in ours.items():
        paper = published.row(method, dataset)
        table_rows = ({f"{method} (paper)": paper} if paper else {}) | {f"{name} (ours)": m for name, m in rows.items()}
        blocks.append(format_table(table_rows, title=f"{dataset} test"))
        if paper is None:
            blocks.append(f"  {method} (paper): not verified, not shown (see the published-results file)")
    return "\n\n".join(blocks)
