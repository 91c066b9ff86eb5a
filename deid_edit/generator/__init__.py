"""The cloak generator's data, training and ONNX export: a learned face de-identifier after Gafni,
Wolf and Taigman, "Live Face De-Identification in Video" (ICCV 2019).

Input: photos and videos (``extract``: a folder of aligned chips). Output: ``models/cloak.onnx``
(``export``), which ``render.cloak`` runs (next stage). Why: an autoencoder conditioned on the
recognizer's descriptor, trained once against that frozen recognizer (low-level features attracted,
identity repelled), changes who a face is while keeping pose, expression and light, with no
per-video training. The network lives in ``deid_edit.nets``; only ``model``, ``train`` and ``export``
import torch (``[train]`` extra), and the product never imports this package. Why these loss
weights and this schedule: README "How it works", design notes; the shipped recipe: models/README.md.
"""
