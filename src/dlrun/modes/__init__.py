"""The modes besides train/predict: each a module with `run(cfg)` (dispatched by dlrun.run.run)."""
