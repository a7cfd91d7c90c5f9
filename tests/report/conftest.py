from tests.plots.conftest import cmd_result, dmd_result, prune_result  # noqa: F401  (shared small results)
