"""vqsearch: where did I last see it? Region track tokens from video, searched by text or crop."""

__version__ = "0.1.0"
