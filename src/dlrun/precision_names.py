"""The names of trainer.precision, torch-free: the config check parses them before torch is imported."""

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
# Lightning's spellings of the same settings.
PRECISION_ALIASES = {"32-true": "32", "bf16": "bf16-mixed", "16": "16-mixed"}
AUTO = "auto"  # trainer=fast: chosen for the device (engine.device.auto_precision)


def parse(precision: str | int) -> str:
    """dlrun's name of a precision setting (Lightning's `32-true`, `bf16`, `16` included)."""
    name = PRECISION_ALIASES.get(str(precision), str(precision))
    if name not in (*PRECISIONS, AUTO):
        raise ValueError(
            f"one of {', '.join(PRECISIONS)}, {AUTO} (or Lightning's {', '.join(PRECISION_ALIASES)})"
        )
    return name
