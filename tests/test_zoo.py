"""A zoo of architectures nobody on the project wrote: torchvision's and timm's own model
definitions (random weights, no download), exported to ONNX with torch.onnx as a user would, each
built for the 256 KB Cortex-M4 board, bit-exact with TFLite Micro on tinyc's .tflite export, and
trained with --train last:2 (generated C == numpy reference, step by step).

torch, torchvision and timm are an optional extra (`pip install -e '.[zoo]'` where a CPU wheel of
torch is available): without them these tests are skipped, never the compiler's dependency."""
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="the zoo needs torch (optional extra 'zoo')")

SIZE = 64


def _libraries():
    # torchvision's compiled ops need the CUDA build of torch; the model definitions do not:
    # skip registering their abstract implementations (only the ops' fake kernels)
    register = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda f: f)
    try:
        import timm
        import torchvision
    except ImportError as e:
        pytest.skip(f"the zoo needs torchvision and timm ({e})")
    finally:
        torch.library.register_fake = register
    return torchvision, timm


ZOO = {   # name -> (library, constructor name)
    "shufflenet_v2_x0_5": ("torchvision", "shufflenet_v2_x0_5"),   # Split/Slice, channel shuffle
    "squeezenet1_1": ("torchvision", "squeezenet1_1"),             # ceil_mode, conv classifier
    "mobilenetv3_small_050": ("timm", "mobilenetv3_small_050"),    # HardSwish, SE gates
    "lcnet_050": ("timm", "lcnet_050"),                            # HardSwish, SE
    "tinynet_e": ("timm", "tinynet_e"),                            # swish, SE (EfficientNet)
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    torchvision, timm = _libraries()
    d = tmp_path_factory.mktemp("zoo")
    paths = {}
    for name, (lib, ctor) in ZOO.items():
        torch.manual_seed(0)
        if lib == "torchvision":
            model = getattr(torchvision.models, ctor)(weights=None, num_classes=10)
        else:
            model = timm.create_model(ctor, pretrained=False, num_classes=10)
        model.eval()
        paths[name] = d / f"{name}.onnx"
        torch.onnx.export(model, torch.randn(1, 3, SIZE, SIZE), str(paths[name]),
                          opset_version=17, dynamo=False)
    return paths


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_builds_bitexact_with_tflite_micro(name, zoo, tmp_path):
    from test_bitexact import four_way
    four_way(zoo[name], tmp_path, n_inputs=1)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_trains_last2_like_the_reference(name, zoo, tmp_path):
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    g = compile_training(str(zoo[name]), None, "last:2", 5, TrainOptions())
    assert_same_training(g, tmp_path, lr=0.02, steps=4)
