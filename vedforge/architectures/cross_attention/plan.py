"""The plan of a cross-attention forge (``VisionEncoderDecoderModel``), decided without reading a weight.

The checkpoints' configs, tokenizer and image processor are read (only those are fetched from the
hub), and every refusal that needs no weights happens here: an unsupported pairing, a
``cross_attention.init`` the decoder cannot take exactly, a safetensors model larger than
``output.max_shard_size``. The combined config, token ids and the tensors to write are decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Optional

from vedforge.architectures.parts import FORGE, LayoutPlan, PartPlan
from vedforge.core.errors import VedforgeError
from vedforge.core.frameworks import flax_classes_available
from vedforge.families.registry import ModelFamily
from vedforge.recipe.typed import ROLES, PartRecipe, Recipe
from vedforge.sources.resolve import ResolvedSource, locate
from vedforge.weights.layouts import layouts_for, planned_files


def torch_built(family: ModelFamily, role: str) -> bool:
    """Whether a part of ``family`` in ``role`` is built by transformers' PyTorch classes (an
    encoder without a Flax port). The others are assembled in Flax layout, from traced Flax
    classes or, where transformers has none, from the PyTorch view of the same tree."""
    return role == "encoder" and family.built_with == "pytorch"


def reads_torch_view(decoder: ModelFamily, recipe: Recipe) -> bool:
    """Whether the Flax-layout tree is read off the PyTorch classes on the meta device
    (:mod:`.torch_view`) rather than traced from transformers' Flax classes: where there are no
    Flax classes (transformers 5), for a decoder without a working Flax port even under 4.57, and
    for a PyTorch forge of pretrained parts, which then imports no jax or flax
    (:func:`vedforge.recipe.backends.pretrained_torch_forge`; the two views agree, tested).
    The whole tree is read one way, so the encoder's and the decoder's paths agree."""
    from vedforge.recipe.backends import pretrained_torch_forge

    return (not flax_classes_available() or decoder.built_with == "pytorch"
            or pretrained_torch_forge(recipe.backend, (recipe.part(role).random_weights for role in ROLES)))


@dataclass(frozen=True)
class Part(PartPlan):
    """A cross-attention input; an encoder built with PyTorch also has its state-dict specs."""

    # For an encoder built with PyTorch: its state-dict name -> shape/dtype, and its buffers.
    torch_specs: Optional[tuple[Mapping[str, Any], frozenset[str]]] = None
    # Its Flax-layout tensors are read off the PyTorch class (see reads_torch_view).
    torch_view: bool = False

    @cached_property
    def shapes(self) -> Mapping[Any, Any]:
        """Every tensor of the checkpoint, from its config: Flax path -> shape/dtype, or for an
        encoder built with PyTorch its state-dict name -> shape/dtype. Traced when first asked for."""
        if self.torch_specs is not None:
            return self.torch_specs[0]
        if self.torch_view:
            import vedforge.architectures.cross_attention.torch_view as torch_view

            return torch_view.checkpoint_shapes(self.saved_config, self.role)
        from vedforge.architectures.cross_attention.shapes import checkpoint_shapes

        return checkpoint_shapes(self.saved_config, self.role)

    @property
    def buffers(self) -> frozenset[str]:
        """PyTorch buffers (not parameters) among :attr:`shapes`."""
        return self.torch_specs[1] if self.torch_specs is not None else frozenset()


@dataclass(frozen=True)
class CrossAttentionPlan:
    """What a cross-attention forge of one recipe will do."""

    recipe: Recipe
    output_dir: Path
    encoder: Part
    decoder: Part
    config: Any = None  # the combined VisionEncoderDecoderConfig, token ids applied
    generation: Any = None
    processor: Any = None
    tokenizer: Any = None
    ids: Any = None  # vedforge.recipe.token_policy.TokenIds
    old_vocab: int = 0
    target: Mapping[tuple, Any] = field(default_factory=dict)  # Flax-layout tensors to assemble
    layouts: tuple[LayoutPlan, ...] = ()
    outcome: str = FORGE

    def part(self, role: str) -> Part:
        return self.encoder if role == "encoder" else self.decoder

    @cached_property
    def tensors(self) -> Any:
        """What the assembly will do with each target tensor (copy, resize, grow or create it),
        as a :class:`vedforge.architectures.cross_attention.assembly.Assembly` of shapes, with its part reports.

        Computed when first asked for (``vedforge plan`` does; a forge learns the same from its
        real assembly), because it traces both checkpoints' classes.
        """
        from vedforge.architectures.cross_attention.assembly import assemble
        from vedforge.families.roles import init_std

        family = self.decoder.family
        growth = (self.old_vocab, self.ids.vocab_size) if self.ids.vocab_size != self.old_vocab else None
        tensors = assemble(
            self.target, {role: {} if self.part(role).built_with_torch else self.part(role).shapes for role in ROLES},
            seed=self.recipe.seed, init_std=init_std(self.decoder.config.model, family),
            aliases=family.aliases, decoder_vocab_growth=growth, dry_run=True,
        )
        if self.encoder.built_with_torch:
            report_torch_encoder(tensors.reports["encoder"], self.encoder.shapes, [], self.encoder.buffers)
        return tensors

    @property
    def parameters(self) -> dict[str, int]:
        """Parameter counts as the manifest records them."""
        return self.tensors.parameter_counts()

    @property
    def total_parameters(self) -> int:
        """All parameters of the forged model, counted without tracing the checkpoints."""
        import numpy as np

        total = sum(int(np.prod(spec.shape, dtype=np.int64)) for spec in self.target.values())
        if self.encoder.built_with_torch:
            total += sum(int(np.prod(spec.shape, dtype=np.int64)) for name, spec in self.encoder.shapes.items()
                         if name not in self.encoder.buffers)
        return total

    @property
    def write_bytes(self) -> int:
        return sum(layout.bytes for layout in self.layouts)

    @property
    def download_bytes(self) -> int:
        return sum(p.download_bytes for p in (self.encoder, self.decoder) if p is not None)

    @property
    def needs_keyword_decode(self) -> bool:
        return self.decoder.family.keyword_decode

    @property
    def drop_path_rate(self) -> float:
        """The encoder's stochastic depth rate where the Flax model then needs a "droppath" PRNG
        in training (vedforge.compat supplies it), else 0."""
        if not self.encoder.family.drop_path_rng:
            return 0.0
        return float(getattr(self.encoder.config.model, "drop_path_rate", 0.0) or 0.0)

    @property
    def needs_compat(self) -> bool:
        """The Flax model needs vedforge.compat (keyword decoding, CLIP's vision tower registered,
        or BEiT's drop-path PRNG in training)."""
        return (self.decoder.family.keyword_decode or self.encoder.family.needs_flax_registration
                or self.drop_path_rate > 0)

    @property
    def needs_torch_compat(self) -> bool:
        return self.encoder.family.torch_compat_fix is not None


def fetch_sources(plan: CrossAttentionPlan) -> dict[str, ResolvedSource]:
    """The plan's sources with their weights on disk (hub weights are downloaded here)."""
    sources = {}
    for role in ROLES:
        part = plan.part(role)
        if part.source.kind == "hub":
            sources[role] = locate(part.recipe, plan.recipe.hub, need_weights=not part.recipe.random_weights,
                                    torch_weights=part.built_with_torch)
        else:
            sources[role] = part.source
    return sources


def plan_cross_attention(recipe: Recipe) -> CrossAttentionPlan:
    """Plan the cross-attention forge of ``recipe`` without reading any weight.

    Raises:
        VedforgeError: every problem that needs no weights to be found.
    """
    if recipe.backend == "flax" and not flax_classes_available():
        from vedforge.core.errors import BackendError
        from vedforge.core.frameworks import flax_missing_reason

        raise BackendError(flax_missing_reason(
            "backend=flax (Flax weights, flax_model.msgpack)")
            + " For the PyTorch model of this recipe here, add backend=pt.")
    import transformers

    from vedforge.architectures.cross_attention.assembly import target_shapes
    from vedforge.weights.writer import nbytes
    from vedforge.sources.loading import load_decoder_config, load_encoder_config, load_tokenizer
    from vedforge.sources.processor_files import read_processor_files
    from vedforge.recipe.token_policy import apply_token_ids, generation_config_for, resolve_token_ids

    transformers.utils.logging.set_verbosity_error()
    hub = recipe.hub
    # Configs first: a pairing that cannot be forged is refused before any weights are fetched.
    sources = {role: locate(recipe.part(role), recipe.hub, need_weights=False) for role in ROLES}
    enc = load_encoder_config(sources["encoder"], recipe.encoder.config_overrides, hub.trust_remote_code, recipe.backend)
    enc_family = enc.family
    torch_encoder = torch_built(enc_family, "encoder")
    if torch_encoder:
        from vedforge.families.torch_fixes import prepare_encoder_config

        prepare_encoder_config(enc.model)
    dec = load_decoder_config(sources["decoder"], recipe.decoder.config_overrides, hub.trust_remote_code,
                              recipe.backend)
    dec_family = dec.family
    torch_view_tree = reads_torch_view(dec_family, recipe)
    if recipe.cross_attention_init == "zero":
        _check_zero_init(dec_family)
    processor = read_processor_files(sources["encoder"].path, sources["encoder"].describe())
    if isinstance(getattr(enc.model, "image_size", None), int):
        processor.fit_to_image_size(enc.model.image_size)
    tokenizer = load_tokenizer(sources["decoder"], hub.trust_remote_code)
    ids = resolve_token_ids(recipe.token_policy, tokenizer, dec.model, dec_family, sources["decoder"].describe())
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc.model, dec.model)
    old_vocab = int(dec.model.vocab_size)
    apply_token_ids(config, ids)
    config.architectures = ["VisionEncoderDecoderModel"]
    generation = generation_config_for(config, ids)
    if torch_view_tree:
        # No Flax classes to trace (transformers 5, or a decoder without a working Flax port):
        # the same tree, read off the PyTorch model.
        import vedforge.architectures.cross_attention.torch_view as torch_view

        target = torch_view.target_shapes(config)
        if torch_encoder:
            target = {k: v for k, v in target.items() if k[0] != "encoder"}
    elif torch_encoder:
        from vedforge.architectures.cross_attention.torch_encoder import standin_trace_config

        target = {k: v for k, v in target_shapes(standin_trace_config(config)).items() if k[0] != "encoder"}
    else:
        target = target_shapes(config)

    total_bytes = sum(nbytes(spec) for spec in target.values())
    if recipe.backend == "flax" and recipe.output.format == "safetensors" and total_bytes > recipe.output.max_shard_size:
        raise VedforgeError(
            f"output.format=safetensors writes one file, but the model ({total_bytes / 1e9:.2f} GB) exceeds "
            f"output.max_shard_size={recipe.output.max_shard_size_text}, and transformers' Flax classes cannot load "
            "sharded safetensors. Raise output.max_shard_size, or use output.format=msgpack for a sharded checkpoint."
        )

    parts = {
        "encoder": _plan_part(recipe.encoder, sources["encoder"], enc, enc_family, recipe, torch_view_tree),
        "decoder": _plan_part(recipe.decoder, sources["decoder"], dec, dec_family, recipe, torch_view_tree),
    }
    # Every target tensor is filled with its own shape, so the target tells what is written.
    layouts = _plan_layouts(recipe, config, target, parts["encoder"])
    return CrossAttentionPlan(
        recipe, recipe.output.dir, encoder=parts["encoder"], decoder=parts["decoder"], config=config,
        generation=generation, processor=processor, tokenizer=tokenizer, ids=ids, old_vocab=old_vocab, target=target,
        layouts=layouts,
    )


def _plan_part(part: PartRecipe, source: ResolvedSource, config: Any, family: ModelFamily, recipe: Recipe,
               torch_view: bool) -> Part:
    from vedforge.sources.weight_files import planned_weight_files

    torch_encoder = torch_built(family, part.role)
    files = () if part.random_weights else planned_weight_files(source, part, recipe.hub, torch_weights=torch_encoder)
    if torch_encoder:
        from vedforge.architectures.cross_attention.torch_encoder import encoder_tensor_specs

        specs, buffers = encoder_tensor_specs(config.model)
        return Part(part, source, config, family, files, config.checkpoint, (specs, frozenset(buffers)), torch_view)
    saved_as = config.checkpoint
    if not part.random_weights and part.config_overrides:
        from vedforge.sources.loading import read_config

        # The file holds the tensors of the config it was saved with, not of the overridden one.
        saved_as = read_config(source, recipe.hub.trust_remote_code)
    return Part(part, source, config, family, files, saved_as, torch_view=torch_view)


def _plan_layouts(recipe: Recipe, config: Any, params: Mapping[tuple, Any], encoder: Part) -> tuple[LayoutPlan, ...]:
    from vedforge.weights.writer import nbytes

    plans = []
    for layout in layouts_for(recipe.backend, recipe.output.format, recipe.output.pytorch):
        if layout.tensors == "flax":
            sizes = [(path, nbytes(spec)) for path, spec in params.items()]
        else:
            from vedforge.weights.pytorch_layout import to_pytorch_layout

            native = dict(encoder.shapes) if encoder.built_with_torch else None
            sizes = [(name, nbytes(spec)) for name, spec in to_pytorch_layout(config, params, native).items()]
        plans.append(LayoutPlan(layout, tuple(planned_files(layout, sizes, recipe.output.max_shard_size)),
                                sum(size for _, size in sizes)))
    return tuple(plans)


def report_torch_encoder(report: Any, state: Mapping[str, Any], missing: list[str], buffers: set[str] | frozenset[str]) -> None:
    """Fill the encoder's part report for an encoder built with PyTorch (buffers such as
    batch-norm statistics are not parameters and are not counted)."""
    import numpy as np

    missing_set = set(missing)
    for name, arr in sorted(state.items()):
        if name in buffers:
            continue
        size = int(np.prod(arr.shape, dtype=np.int64))
        if name in missing_set:
            report.new += size
            report.new_tensors.append(name)
        else:
            report.from_checkpoint += size


def _check_zero_init(family: ModelFamily) -> None:
    """Refuse cross_attention.init=zero, before any weights load, where it cannot be exact."""
    from vedforge.families.registry import DECODER_FAMILIES

    if family.cross_attention_output is None:
        exact = sorted(t for t, f in DECODER_FAMILIES.items() if f.cross_attention_output)
        raise VedforgeError(
            f"cross_attention.init=zero cannot keep a '{family.model_type}' decoder's outputs unchanged: its "
            "cross-attention is followed by a LayerNorm over the residual (or is already pretrained), so a zero "
            f"projection still changes what it computes. Use cross_attention.init=random, or a decoder of type: "
            f"{', '.join(exact)}."
        )


