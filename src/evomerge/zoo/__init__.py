"""The offline world: generated benchmarks and the committed tiny demo zoo."""

from evomerge.zoo.manifest import ZOO_DIR, verify, zoo_models

__all__ = ["ZOO_DIR", "verify", "zoo_models"]
