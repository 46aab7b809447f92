import logging

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


@pytest.fixture
def mmengine_messages():
    """The messages logged to mmengine's current logger (the instance current when the fixture
    is set up) while the test runs."""
    from mmengine.logging import MMLogger
    messages = []

    class Keep(logging.Handler):

        def emit(self, record):
            messages.append(record.getMessage())

    handler = Keep()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)
