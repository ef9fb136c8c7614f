"""One module per command; each exposes a config dataclass and ``run(cfg)``."""
