"""The ``hpacell`` command line, configuration files, the Snakemake workflow and the demo."""

from hpacell.utils.lazy import lazy_exports

_EXPORTS = {
    "app": ".cli",
    "main": ".cli",
    "COMMANDS": ".cli",
    "load_config": ".config",
    "save_config": ".config",
    "ConfigError": ".config",
    "DemoConfig": ".demo",
    "run_demo": ".demo",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
