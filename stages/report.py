"""report: reports/index.html (self-contained) and reports/summary.md comparing every variant."""

from pathlib import Path

import pandas as pd

from etude import report
from etude.cli import stage_main
from etude.pipeline import PIECES, REPORT_HTML, REPORT_MD


def run(params, _variant):
    report.build(params, pd.read_parquet(PIECES), Path(REPORT_HTML), Path(REPORT_MD))
    print(f"report: {REPORT_HTML}, {REPORT_MD}")


if __name__ == "__main__":
    stage_main("report", run)
