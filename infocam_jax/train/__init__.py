"""Training: ``state`` (train state and the pmapped step), ``optim``, ``checkpoints``, ``loop``
(the epoch loop) and ``trainer`` (one model from a validated config)."""
