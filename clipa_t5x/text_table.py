"""Plain-text tables for the summaries that runs print and write."""

from typing import Sequence


def format_table(rows: Sequence[Sequence[str]]) -> str:
  """Left-aligned text table; the first row is the header, ruled below."""
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  out = []
  for i, row in enumerate(rows):
    out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if i == 0:
      out.append("  ".join("-" * w for w in widths))
  return "\n".join(out)
