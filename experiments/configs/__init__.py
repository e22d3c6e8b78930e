"""One ml_collections config file per paper recipe; ``get_config('quick')`` for the CPU version."""
