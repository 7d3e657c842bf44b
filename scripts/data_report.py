"""Measure the tokenizer and data pipeline on ../shared/data, from a checkout: the same command as the installed
`vanilla-data-report` (see modeling_vanilla/cli/data_report.py; `--help` for the options)."""

from modeling_vanilla.cli.data_report import main

if __name__ == "__main__":
    raise SystemExit(main())
