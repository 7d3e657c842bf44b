"""The commands (`vanilla-train`, `vanilla-translate`, ...): argument parsing around the package's modules.

Nothing in the package imports these modules; each has a `main(argv=None)` that its console entry point calls."""
