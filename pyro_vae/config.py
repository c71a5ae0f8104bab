"""Run configuration: TOML or dict -> validated dataclasses, with clear errors.

A config has the sections ``[data] [model] [prior] [likelihood] [guide]
[inference] [train]``.  Every key is checked: unknown keys, wrong types and
impossible values raise :class:`~pyro_vae.errors.UserError` naming the key and
what is allowed.  ``--set section.key=value`` overrides parse ``value`` as TOML.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .data import BINARIZE_MODES, DATASETS
from .elbos import ELBOS
from .errors import UserError
from .guides import GUIDES
from .likelihoods import LIKELIHOODS, MIN_GAUSSIAN_SCALE
from .nets import ACTIVATIONS, NETWORKS
from .priors import PRIORS
from .train import COMPILE_SETTINGS, PRECISION_SETTINGS, check_threads
from .train.schedules import LR_SCHEDULES

__all__ = [
    "MAX_COUNT",
    "MAX_DATA_DIM",
    "MAX_PARTICLES",
    "MAX_WIDTH",
    "check_count",
    "DataConfig",
    "ModelConfig",
    "PriorConfig",
    "LikelihoodConfig",
    "GuideConfig",
    "InferenceConfig",
    "TrainConfig",
    "RunConfig",
    "CONFIG_DIR",
    "config_file",
    "config_summary",
    "shipped_configs",
    "load_config",
    "apply_overrides",
    "dump_toml",
]


@dataclass
class DataConfig:
    dataset: str = "mnist5k"
    path: str | None = None
    data_dir: str | None = None
    binarize: str = "dynamic"
    # keep only the first N examples of the (already shuffled) split: quick runs and tests
    train_size: int | None = None
    test_size: int | None = None
    # hold out the last N training examples as the evaluation set (model selection); 0: the
    # dataset's own test split
    validation: int = 0

    def validate(self) -> None:
        _choice("data.binarize", self.binarize, BINARIZE_MODES)
        if self.path is None:
            _choice("data.dataset", self.dataset, DATASETS.names())
        for key in ("train_size", "test_size"):
            if getattr(self, key) is not None:
                check_count(f"data.{key}", getattr(self, key))
        if self.validation < 0:
            raise UserError(f"data.validation must be >= 0, got {self.validation}")


@dataclass
class ModelConfig:
    latent_dim: int = 50
    network: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [400])
    activation: str = "softplus"
    channels: list[int] = field(default_factory=lambda: [32, 64])  # network "conv" only
    # two stochastic layers: the sizes of z1 (next to x) and z2, e.g. [100, 50]; then
    # ``hidden`` sizes the x <-> z1 networks and ``hidden_between`` the z1 <-> z2 ones
    latent_dims: list[int] = field(default_factory=list)
    hidden_between: list[int] = field(default_factory=lambda: [100, 100])
    # the decoder's output bias at the start: "zero" (PyTorch's default initialisation) or
    # "data_mean" (the logit of the training set's mean pixel; Bernoulli likelihood only)
    decoder_bias: str = "zero"

    def validate(self) -> None:
        check_count("model.latent_dim", self.latent_dim, MAX_WIDTH)
        if self.latent_dims and len(self.latent_dims) != 2:
            raise UserError("model.latent_dims lists the sizes of two stochastic layers "
                            f"(e.g. [100, 50]) or is empty, got {self.latent_dims}")
        for size in (*self.latent_dims, *self.hidden_between):
            check_count("model.latent_dims / model.hidden_between", size, MAX_WIDTH)
        _choice("model.decoder_bias", self.decoder_bias, ("zero", "data_mean"))
        for size in self.hidden:
            check_count("model.hidden", size, MAX_WIDTH)
        for size in self.channels:
            check_count("model.channels", size, MAX_WIDTH)
        _choice("model.network", self.network, NETWORKS.names())
        _choice("model.activation", self.activation, sorted(ACTIVATIONS))


@dataclass
class PriorConfig:
    """``components``: K of ``mixture`` and ``vamp``; ``df``: ``student_t``'s degrees of freedom."""

    name: str = "normal"
    components: int = 10
    df: float = 3.0

    def validate(self) -> None:
        _choice("prior.name", self.name, PRIORS.names())
        check_count("prior.components", self.components, MAX_WIDTH)
        _greater("prior.df", self.df, 0.0)


@dataclass
class LikelihoodConfig:
    """``scale``/``learn_scale``: sigma of ``gaussian``; ``epsilon``: the data clamp of ``beta``."""

    name: str = "bernoulli"
    scale: float = 0.1
    learn_scale: bool = False
    epsilon: float = 1.0 / 510.0

    def validate(self) -> None:
        _choice("likelihood.name", self.name, LIKELIHOODS.names())
        _greater("likelihood.scale", self.scale, MIN_GAUSSIAN_SCALE)
        _greater("likelihood.epsilon", self.epsilon, 0.0)
        if not self.epsilon < 0.5:
            raise UserError(f"likelihood.epsilon must be < 0.5, got {self.epsilon}")


@dataclass
class GuideConfig:
    """``flows``/``flow_hidden``: ``iaf``'s layers and their hidden sizes ([] = 2 * latent_dim)."""

    name: str = "gaussian"
    flows: int = 2
    flow_hidden: list[int] = field(default_factory=list)

    def validate(self) -> None:
        _choice("guide.name", self.name, GUIDES.names())
        check_count("guide.flows", self.flows, 64)
        for size in self.flow_hidden:
            check_count("guide.flow_hidden", size, MAX_WIDTH)


@dataclass
class InferenceConfig:
    """``elbo = "auto"`` resolves to ``meanfield`` (closed-form KL) when ``kl_divergence(q, p)``
    is registered for the guide's and prior's distributions, else to ``trace`` (Monte Carlo).

    ``kl_warmup_epochs``: the KL term's weight grows linearly from ~0 to 1 over that many epochs.
    ``free_bits``: nats per example below which the batch-mean KL is not penalised further.
    ``kl_weight``: beta of a beta-VAE (after warm-up); 0 with the ``delta`` guide is the plain
    autoencoder (reconstruction only).
    ``max_plate_nesting``: the ELBO's bound on nested plates; unset, Pyro infers it from a
    trace of the model and guide (a plugin model with nested plates needs no setting).
    """

    elbo: str = "auto"
    num_particles: int = 1
    max_plate_nesting: int | None = None
    eval_particles: int = 1000
    kl_warmup_epochs: int = 0
    free_bits: float = 0.0
    kl_weight: float = 1.0

    def validate(self) -> None:
        _choice("inference.elbo", self.elbo, ELBOS.names())
        check_count("inference.num_particles", self.num_particles, MAX_PARTICLES)
        check_count("inference.eval_particles", self.eval_particles, MAX_PARTICLES)
        if self.max_plate_nesting is not None:  # torch has at most 64 dimensions
            check_count("inference.max_plate_nesting", self.max_plate_nesting, 64)
        if self.kl_warmup_epochs < 0:
            raise UserError(f"inference.kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs}")
        _at_least_zero("inference.free_bits", self.free_bits)
        _at_least_zero("inference.kl_weight", self.kl_weight)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    # "bfloat16": the training loss under torch.autocast; "auto": bfloat16 where the hardware
    # multiplies it natively, else float32 (pyro_vae/train/precision.py); the default, since
    # benchmarks/vae_throughput.py measured the two within 0.03 nats of test ELBO
    precision: str = "auto"
    # "on": the fused VAE loss and its gradient under torch.compile (seconds to a minute,
    # once); "auto": only for runs long enough to pay for it (pyro_vae/train/compilation.py)
    compile: str = "auto"
    # learning rate of epoch e = lr x schedule(e): "constant", "iwae" (Burda et al.'s 3^i-epoch
    # stages), "step" (x lr_decay every lr_step epochs), "exponential" (x lr_decay per epoch)
    schedule: str = "constant"
    lr_decay: float = 0.5
    lr_step: int = 10
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    # TensorBoard event files go to <log_dir>/<run id> (None: no TensorBoard log)
    log_dir: str | None = None
    threads: int | str = "auto"  # torch's intra-op threads; "auto": pyro_vae.train.threads

    def validate(self) -> None:
        check_threads(self.threads)
        check_count("train.epochs", self.epochs)
        check_count("train.batch_size", self.batch_size)
        _greater("train.lr", self.lr, 0.0)
        if self.seed < 0:
            raise UserError(f"train.seed must be >= 0, got {self.seed}")
        _choice("train.device", self.device, ("cpu", "cuda"))
        _choice("train.precision", self.precision, PRECISION_SETTINGS)
        _choice("train.compile", self.compile, COMPILE_SETTINGS)
        _choice("train.schedule", self.schedule, LR_SCHEDULES.names())
        if not 0 < self.lr_decay <= 1:
            raise UserError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")
        check_count("train.lr_step", self.lr_step)
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise UserError(f"train.adam_betas wants two numbers in [0, 1), got {self.adam_betas}")
        _greater("train.adam_eps", self.adam_eps, 0.0)
        if self.log_dir is not None and (not self.log_dir.strip()
                                         or Path(self.log_dir).exists()
                                         and not Path(self.log_dir).is_dir()):
            raise UserError(f"train.log_dir must name a folder for TensorBoard's event files, "
                            f"got {self.log_dir!r}")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (TOML/JSON/checkpoint safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, mapping: dict[str, Any]) -> RunConfig:
        """Build and validate; every problem is a ``UserError`` naming ``section.key``."""
        if not isinstance(mapping, dict):
            raise UserError(f"a config must be a table of sections, got {type(mapping).__name__}")
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        unknown = set(mapping) - set(sections)
        if unknown:
            raise UserError(
                f"unknown config section {sorted(unknown)[0]!r}; "
                f"valid sections: {', '.join(sections)}"
            )
        built = {
            name: _build_section(name, hints[name], mapping.get(name, {})) for name in sections
        }
        config = cls(**built)
        for name in sections:
            getattr(config, name).validate()
        return config


def _choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        raise UserError(f"{key} = {value!r} is not valid; choose one of: {', '.join(choices)}")


# resource bounds, checked before anything is built or allocated: far above any model this
# package trains, far below a request that would exhaust memory (a layer of 2^16 units
# after a 784-pixel input is 200 MB of float32 weights)
MAX_WIDTH = 2**16  # latent, hidden, channel and component counts
MAX_PARTICLES = 2**20  # particles per example (chunked: memory is bounded separately)
MAX_COUNT = 2**31 - 1  # epochs, batch size, sizes of a subset
MAX_DATA_DIM = 2**24  # features of one example (a 4096 x 4096 image)


def check_count(key: str, value: int, at_most: int = MAX_COUNT) -> None:
    """A :class:`UserError` unless ``value`` is a whole count from 1 to ``at_most``; ``key``
    names it as the user wrote it (a config key or a flag)."""
    if not 1 <= value <= at_most:
        raise UserError(f"{key} must be an integer from 1 to {at_most}, got {value}")


def _greater(key: str, value: float, bound: float) -> None:
    if not (value > bound and math.isfinite(value)):  # also rejects NaN and infinity
        raise UserError(f"{key} must be a finite number > {bound:.3g}, got {value}")


def _at_least_zero(key: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise UserError(f"{key} must be a finite number >= 0, got {value}")


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        # int | str (train.threads): the section's validate checks the value
        return _coerce(key, inner[0], value) if len(inner) == 1 else value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key} must be a list, got {value!r}")
        return [_coerce(key, args[0], v) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and hint is not bool or not isinstance(value, hint):
        raise UserError(f"{key} must be of type {hint.__name__}, got {value!r}")
    return value


def _build_section(name: str, section_cls: type, values: Any):
    if not isinstance(values, dict):
        raise UserError(f"config section [{name}] must be a table, got {values!r}")
    hints = typing.get_type_hints(section_cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise UserError(
            f"unknown key {name}.{sorted(unknown)[0]}; valid keys in [{name}]: {', '.join(hints)}"
        )
    return section_cls(**{k: _coerce(f"{name}.{k}", hints[k], v) for k, v in values.items()})


def _parse_toml_value(text: str) -> Any:
    """A ``--set`` value: TOML (numbers, true/false, lists, quoted strings) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(mapping: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``mapping`` with each ``section.key=value`` override applied."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in mapping.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise UserError(f"--set expects section.key=value, got {item!r}")
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise UserError(f"config section [{section}] must be a table")
        target[name] = _parse_toml_value(text.strip())
    return merged


# the shipped configs: package data, so an installed pyro-vae carries them
CONFIG_DIR = Path(__file__).parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with pyro-vae, by name (the file's stem), sorted."""
    return {path.stem: path for path in sorted(CONFIG_DIR.glob("*.toml"))}


def config_summary(path: str | Path) -> str:
    """What a config is, in one line: the first sentence of its leading comment block."""
    comments = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        comments.append(line.lstrip("#").strip())
    text = " ".join(comments)
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
    return first if len(first) <= 100 else first[:99] + "…"


def config_file(name_or_path: str | Path) -> Path:
    """The TOML file ``name_or_path`` means: a file that exists, else a shipped config's name
    (``vae_vamp_prior`` or ``vae_vamp_prior.toml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if path.parent == Path(".") and path.suffix in ("", ".toml") and path.stem in shipped:
        return shipped[path.stem]
    raise UserError(f"config file {path} does not exist, and no shipped config has that name "
                    f"(pyro-vae configs lists them: {', '.join(shipped)})")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a TOML file or a shipped config by name (or start from defaults), apply
    overrides, validate."""
    mapping: dict[str, Any] = {}
    if path is not None:
        path = config_file(path)
        try:
            mapping = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    return RunConfig.from_dict(apply_overrides(mapping, list(overrides)))


def dump_toml(config: RunConfig) -> str:
    """TOML text that :func:`load_config` reads back to an equal config (``None`` keys omitted)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            # JSON's escapes are TOML's (newlines too); TOML also wants DEL escaped
            return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        return repr(v)

    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value(v)}" for key, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
