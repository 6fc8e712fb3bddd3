import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

SHARED_MODELS = TESTS.parents[1] / "shared" / "models"
SHARED_NAMES = ["mbv2-w0.35_96", "mbv2-w0.35_128", "proxyless-w0.3_96", "proxyless-w0.3_128",
                "mcunet-5fps_96", "mcunet-5fps_128"]


def shared_model(name: str) -> Path:
    path = SHARED_MODELS / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared pretrained models live in ../shared/models "
                    "beside the repository (absent in a plain clone)")
    return path


@pytest.fixture(scope="session")
def small_nets(tmp_path_factory):
    """The six test networks of tests/nets.py written as .onnx files: name -> path."""
    from nets import save_all
    return save_all(tmp_path_factory.mktemp("nets"))
