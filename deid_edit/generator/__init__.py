"""The cloak: a learned face de-identifier after Gafni, Wolf and Taigman, "Live Face
De-Identification in Video" (ICCV 2019) — its data, model, training and ONNX export.

Input: aligned face chips (``extract``: photos/videos -> a chip folder). Output: ``models/cloak.onnx``
(``export``), which the renderer's cloak mode runs with ONNX Runtime, or with ``--backend torch`` as
the native ``deid_edit.nets.cloak.CloakGenerator`` rebuilt from that file (``backend.torch_backend``).
The generator's module and sizes (``CROP_SIZE``, ``DESCRIPTOR_SIZE``) live in ``deid_edit.nets``,
which the inference path shares; nothing it runs imports this package. Only training and the torch
backend need torch (the ``[train]``/``[torch]`` extras); ``extract`` and this ``__init__`` do not
import it.

Commands::

    deid-edit extract-faces SRC... -o DATA [--holdout-people DIR]   # chips + index.jsonl + held_out.json
    deid-edit train-cloak DATA -o RUN [--steps N --batch B --lr LR --resume | --init-from RUN0]
    deid-edit export-cloak RUN -o models/cloak.onnx

The method: a feed-forward adversarial autoencoder. The encoder's bottleneck is concatenated with
the recognizer's descriptor of the input face; the decoder outputs a raw face ``z`` and a mask
``m``; the result is ``m*z + (1-m)*x``. The frozen recognizer (dlib's ResNet, the one the engine's
identities and audit use, ``deid_edit.nets.dlib_resnet``, read from dlib's file by
``deid_edit.convert.dlib_resnet``) is the perceptual
network: low/mid-level features of the output are attracted to the input's (pose, expression,
lighting), its descriptor is repelled (identity). Trained once; no per-video training.

Design choices (and why):

* Crop ``CROP_SIZE`` = 128: the engine's own 150x150 dlib chip (``deid_edit.embed``: 0.25 padding,
  ``CHIP_TEMPLATE``) resized to 128. The same alignment as the recognizer's means the renderer
  cuts one chip per face for both networks (warp with ``chip_transform`` scaled by 128/150, paste
  back with its inverse); 128 = 8 x 2^4 allows four clean down-samplings. During training both
  input and output are resized back to 150 (bilinear) before the recognizer, so the attractor
  compares like with like.
* Generator widths (16, 32, 64, 128, 128) at 128, 64, 32, 16, 8 px, 3x3 convs + LeakyReLU, no
  normalization layers (per-face output, plain Conv graph), nearest-neighbour up-sampling + conv
  (no checkerboard), additive skips (half the decoder cost of concatenation), the descriptor
  L2-normalized, projected to 64 channels and tiled over the 8x8 bottleneck. 0.72 M parameters;
  4.3 ms per face at batch 16 through ONNX Runtime on this project's 2-core CPU (target <= 20 ms),
  which leaves room to double the first two widths if quality needs it.
* The descriptor is a second ONNX input (``descriptor`` [B,128], dlib's, unnormalized), computed
  outside from the 150 chip by the ONNX recognizer the inference path already runs for identities:
  the cloak stays small and the recognizer runs once per face. Outputs: ``cloaked`` [B,3,128,128]
  RGB 0..255 and ``mask`` [B,1,128,128] in 0..1.
* The mask head starts at sigmoid(-2) = 0.12, so early training edits little and the repeller,
  not noise, opens the mask.
* Losses (``train.LossWeights``): attractor 1.0 (relative L1 on the recognizer's stem and the ends
  of its 32/64/128-channel stages), repeller 2.0 (hinge: zero once the descriptor is 1.0 L2 from
  the input's — dlib's same-person threshold is 0.6 — so it stops pushing at "clearly someone
  else" instead of drifting into non-faces), pixel L1 0.5 (on 0..1 pixels), mask L1 0.05 and mask
  total variation 0.5 (small, smooth masks), adversarial 0.05 (hinge GAN, PatchGAN with spectral
  norm, ~30 px patches). Two more terms, off by default, are what made the shipped model
  (``models/README.md``): the detector attractor ``landmarks`` (CenterFace's heatmap and 5-point
  maps of the output pulled to the input's; without it the repeller smears the eye band, the
  cheapest place to move dlib's descriptor) and ``chroma`` (colour change per edited pixel;
  without it the eyes get rainbow fringes).
* What trained the shipped model, on one CPU thread: stage 1 attract 1.5, repel 2 (margin 0.8),
  recon 1, adversarial 0.1, 2,250 steps; stage 2 ``--init-from`` stage 1 plus ``landmarks`` 10,
  500 steps; stage 3 plus ``chroma`` 4, 2,500 steps; stage 4 the same weights with footage faces
  added to LFW, 400 steps. Adding ``landmarks`` at step 0 instead closes the mask for good (every
  term but the repeller is smallest when nothing is edited), hence the curriculum.
* Schedule: Adam 2e-4 for both networks, betas (0.5, 0.999), batch 16, 20 000 steps, the
  adversarial term off for the first 200 steps (a discriminator facing near-copies would only
  learn to spot the mask seam), a checkpoint every 500 steps. Batches and augmentation (flip,
  +-5% scale, +-3% shift, +-4 degrees, brightness/contrast/saturation +-10%) are drawn from
  (seed, step), so ``--resume`` continues exactly where an uninterrupted run would be.
* Held out of training: a fixed 10% of LFW people with >= 2 photos (by a seeded hash of the name)
  and everyone in ``--holdout-people`` folders (for this project ``../shared/faces/people``),
  also matched by descriptor in all other sources (``extract``); the list goes into the dataset
  and the run folder (``held_out.json``).
"""
