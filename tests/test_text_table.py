"""Tests of clipa_t5x.text_table."""
from clipa_t5x import text_table


def test_columns_align_and_header_is_ruled():
  table = text_table.format_table([["stage", "top-1"], ["pretrain", "51.2%"], ["ft", "9%"]])
  assert table.splitlines() == ["stage     top-1",
                                "--------  -----",
                                "pretrain  51.2%",
                                "ft        9%"]
