"""One module per model family; each registers its named models with `v2v.restore.registry.register`."""
