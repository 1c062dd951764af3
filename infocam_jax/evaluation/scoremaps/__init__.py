"""Saved score maps in the reference WSOL evaluation's layout: ``read`` (metadata and maps),
``score`` (the reference evaluation of saved maps, batched) and ``write`` (export)."""
