"""What the user picks for a live session (CLI flags, GUI controls), as one value."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .. import options as defaults

__all__ = ["LiveOptions", "target_of"]


@dataclass(frozen=True)
class LiveOptions:
    """Everything about a live session that the user picks (CLI flags, GUI controls)."""

    model: str = defaults.DEFAULT_MODEL
    weights: str | None = None
    layer: str | None = None
    method: str = defaults.DEFAULT_METHOD
    target: str = "top1"
    device: str = "auto"
    precision: str = "fp32"
    input_policy: str = defaults.DEFAULT_INPUT_POLICY  # how a frame becomes the model input (``--input-size``)
    alpha: float = defaults.DEFAULT_ALPHA
    colormap: str = defaults.DEFAULT_COLORMAP
    boxes: bool = True
    labels: bool = True
    threshold: float = defaults.DEFAULT_THRESHOLD
    min_score: float = defaults.DEFAULT_MIN_SCORE
    smooth: float = defaults.DEFAULT_SMOOTH
    side_by_side: bool = False
    every: int = 0  # 0: auto (camvideo.jobs.pacing picks it from the measured model time)
    #: torch CPU threads while the model runs in the background (every > 1): one core
    #: left for decoding, drawing and the GUI keeps the display on time. 0: leave as is.
    model_threads: int = 1
    backend: str = defaults.DEFAULT_BACKEND

    def model_options(self) -> defaults.ModelOptions:
        """The Explainer this session needs, as the one typed value every front end builds from."""
        return defaults.ModelOptions(model=self.model, method=self.method, layer=self.layer, device=self.device,
                                     weights=self.weights, precision=self.precision, input_policy=self.input_policy,
                                     backend=self.backend)  # fmt: skip

    def model_key(self) -> tuple:
        """What a new Explainer is needed for (anything else changes on the fly)."""
        return (self.model, self.weights, self.layer, self.device, self.precision, self.input_policy, self.backend)

    @classmethod
    def from_args(cls, args: object) -> LiveOptions:
        """From an argparse namespace (``camvideo live``): the fields it has."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**values)


def target_of(text: str | int | None) -> str | int | None:
    """A target setting as the explainer takes it: "top1", "top3", an index, a name."""
    if text is None:
        return None
    value = str(text).strip()
    return int(value) if value.isdigit() else value
