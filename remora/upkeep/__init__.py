"""Background loops of the API process, one holder at a time under a database lock: reconciler, maintenance (retention)."""
