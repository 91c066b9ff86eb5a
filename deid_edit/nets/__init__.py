"""The torch networks the engine and its training share: dlib's face recognition ResNet
(``nets.dlib_resnet``) and the cloak generator (``nets.cloak``).

Why a package of their own: the torch backend (``backend.torch_backend``) rebuilds these modules
from the shipped ``.onnx`` files, and the converter (``convert.dlib_resnet``) and the training
(``generator``) build and export them. Defining them here, on torch alone, lets all three use one
definition without the inference path importing the converter or the training code. The
submodules import only torch, numpy and this ``__init__``; this ``__init__`` imports nothing (not
even torch), so the renderer can read the sizes below on a machine without torch.
"""

CROP_SIZE = 128  # cloak generator input/output side, pixels
RECOGNIZER_SIZE = 150  # dlib's chip side (deid_edit.embed.CHIP_SIZE)
DESCRIPTOR_SIZE = 128  # dlib's descriptor length (deid_edit.embed.EMBEDDING_SIZE)
