"""Built-in merge methods; importing this package registers them."""

from evomerge.merge.methods import (
    linear,
    model_stock,
    nearswap,
    passthrough,
    slerp,
    task_arithmetic,
)

__all__ = ["linear", "model_stock", "nearswap", "passthrough", "slerp", "task_arithmetic"]
