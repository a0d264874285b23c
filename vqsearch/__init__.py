"""vqsearch: where did I last see it? Region track tokens from video, searched by text or crop."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Public API loaded on first use, so `import vqsearch` stays cheap."""
    if name == "load_tren_head":
        from vqsearch.models.tren import load_tren_head

        return load_tren_head
    raise AttributeError(f"module 'vqsearch' has no attribute {name!r}")
