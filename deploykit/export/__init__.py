"""Exporters: PyTorch model -> deployable artifact. Never imports ``deploykit.bench``."""
