"""One module per diffusion family; each calls `v2v.diffusion.registry.register` at import (see the registry's
docstring for what a family declares). Modules here import nothing heavy at module level."""
