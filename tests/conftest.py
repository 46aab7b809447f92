import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` when no GPU is visible (they are never weakened)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)
