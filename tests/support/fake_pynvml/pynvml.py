"""A FAKE ``pynvml`` module for a node agent run in a separate process by a test.

Put ``tests/support/fake_pynvml`` first on ``PYTHONPATH`` and name a state file (written by a
``tests.support.fake_nvml.FakeNvml`` with ``state_path``) in ``GAIA_FAKE_NVML_STATE``: then
``import pynvml`` in that process gives this module, whose every attribute is that of a
``FakeNvml`` attached to the file, so the test changes the machine (``xid``, ``ecc``...) and the
agent sees it. Nothing here is NVIDIA's library.
"""

import os
from pathlib import Path
from typing import Any

from tests.support.fake_nvml import FakeNvml

_fake = FakeNvml.attach(Path(os.environ["GAIA_FAKE_NVML_STATE"]))


def __getattr__(name: str) -> Any:
    return getattr(_fake, name)
