"""The training engine: one loop for every task. It knows nothing about models, data or losses."""
