"""YAML into typed, validated settings: the only place pydantic runs."""
