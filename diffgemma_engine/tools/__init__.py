"""Tools built on the engine: the throughput benchmark and the memory-plan tables (rendering only; the
command-line arguments live in ``diffgemma_adapters.cli``)."""
