"""Models: plain nn.Modules built from the config group `model`. One module + one YAML per model."""
