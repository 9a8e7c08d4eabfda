"""The public source files the layout rules were checked against, one name per file (docs/loading.md
names the versions). A rule's source string in ``Resolved.sources`` quotes these."""

from __future__ import annotations

SRC_SIREN = "vsitzmann/siren modules.py"
SRC_NOTEBOOK = "vsitzmann/siren explore_siren.ipynb"
SRC_FINER = "liuzhen0212/FINER models.py"
SRC_FINER_TRAIN = "liuzhen0212/FINER train_image.py"
SRC_WIRE = "vishwa91/wire modules/{siren,gauss,relu}.py"
SRC_SP = "lucidrains/siren-pytorch siren_pytorch/siren_pytorch.py"
SRC_NS_ENC = "nerfstudio-project/nerfstudio nerfstudio/field_components/encodings.py"
SRC_NS_MLP = "nerfstudio-project/nerfstudio nerfstudio/field_components/mlp.py"
SRC_ALPINE_FFN = "kushalvyas/alpine alpine/models/ffn.py"
SRC_ALPINE_STRAINER = "kushalvyas/alpine alpine/models/strainer.py"
