"""liuzhen0212/FINER: the dict its ``train_image.py`` saves (``{'model_state', 'train_psnr', 'pred_img', ...}``),
which fixes what the bare ``net.{i}.linear`` keys cannot (its argument defaults), and its ``PEMLP``.

FINER's ``Siren``/``Finer``/``Gauss`` saved as a bare state dict are the shared ``net.{i}.linear`` keys
(``siren.py``)."""

from __future__ import annotations

from ..read import RawCheckpoint
from .codebases import SRC_FINER, SRC_FINER_TRAIN
from .entry import Chain, Layout
from .keys import numbered
from .siren import linear_last, net_linear


def train_image(raw: RawCheckpoint) -> bool:
    """FINER's train_image.py saves {'model_state', 'train_psnr', 'pred_img', 'train_iter', 'total_time'}."""
    outside = {k.split(".", 1)[0] for k in raw.skipped}
    return raw.wrapper.split(".")[0] == "model_state" and {"train_psnr", "pred_img"} <= outside


def _w0_train_image(act: str) -> tuple[float, float, str]:
    return 30.0, 30.0, f"layout rule: {SRC_FINER_TRAIN} defaults --first_omega 30 --hidden_omega 30 --scale 30"


TRAIN_IMAGE = Layout(
    name="finer-train-image",
    label="finer train_image.py ({'model_state'}: net.{i}.linear)",
    codebase="FINER train_image.py (--model_type siren|finer|gauss) saving Siren/Finer/Gauss",
    checked=(SRC_FINER, SRC_FINER_TRAIN),
    matches=lambda chain: net_linear(chain) and train_image(chain.raw) and not linear_last(chain),
    fixed={"out_activation": ("none", f"layout rule: FINER's Siren/Finer/Gauss end in nn.Linear, {SRC_FINER}")},
    why={"activation": f"{SRC_FINER_TRAIN} saves this for --model_type siren (its default), finer and gauss"},
    w0=_w0_train_image,
)


def _pemlp(chain: Chain) -> bool:
    return train_image(chain.raw) and numbered(chain.full, "net", ()) and chain.raw.wrapper.split(".")[-1] == "net"


PEMLP = Layout(
    name="finer-pemlp",
    label="finer train_image.py PEMLP ({'model_state'}: net.{2k})",
    codebase="FINER PEMLP (positional encoding + ReLU MLP) saved by train_image.py",
    checked=(SRC_FINER, SRC_FINER_TRAIN),
    matches=_pemlp,
    fixed={"activation": ("relu", f"layout rule: PEMLP's hidden layers are nn.ReLU, {SRC_FINER}"),
           "out_activation": ("none", f"layout rule: PEMLP ends in nn.Linear, {SRC_FINER}"),
           "encoding": ("positional", f"layout rule: PEMLP encodes with its PositionalEncoding, {SRC_FINER}"),
           "pe_convention": ("finer", f"layout rule: PEMLP's PositionalEncoding, {SRC_FINER}")},
    contiguous=False,
    in_features=2,
)  # fmt: skip
