"""Optimizers and learning-rate schedules of the book's chapter 11 (torch's own stay under conf/optim too)."""
