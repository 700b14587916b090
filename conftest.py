"""Root conftest: loads the safety-harness plugin when pytest runs from a checkout where the package
is not installed (installed, it is loaded through its ``pytest11`` entry point of the same name)."""

import importlib.metadata


def _plugin_installed(name: str = "harness.pytest_plugin.plugin") -> bool:
    eps = importlib.metadata.entry_points(group="pytest11")
    return any(ep.name == name for ep in eps)


# harness.fixtures.plugin: the model-building fixtures and --run-training (trainers/, fixtures/).
pytest_plugins = [name for name in ("harness.pytest_plugin.plugin", "harness.fixtures.plugin") if not _plugin_installed(name)]
