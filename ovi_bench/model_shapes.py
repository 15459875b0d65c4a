"""Parameter shapes of Ovi's four large modules, as functions of their widths: the
checkpoint schemas, compact.

Each module's tensors are grouped (a transformer's `*_block` groups hold one layer, repeated per layer) and
every width in a shape is named (`dim`, `4*vae_dec_dim`, `vocoder_channels/8`), so one table gives the bytes
at any preset. The table was written from upstream's state-dict schemas (tests/reference/*.schema.json,
copied from shared/reference), and tests/harness/test_model_shapes.py rebuilds it from them: the table is
kept here rather than reading the schema JSONs at run time because those are 340 KB of test data outside the
package and name only the full widths, while the estimate needs the tiny preset's too. The widths of each
preset: `full` from the schemas' configs, `tiny` from the checkout engine's restatement of the reference
engine's tiny preset (ovi_bench.engines.checkout.PRESETS, which a parity test ties to ovi_engine).
"""

from __future__ import annotations

import math

from ovi_bench.engines.checkout import PRESETS

Shape = tuple[int | str, ...]
FLOAT32_GROUPS = ("mel_buffers",)  # the mel filter bank and window stay float32 whatever the compute dtype
LAYERS = {"fusion": "num_layers", "text_encoder": "text_layers"}  # what a `*block` group repeats by


def _dims(fusion: dict[str, int], text: dict[str, int], video_vae: dict[str, int], audio_vae_dim: int,
          vocoder_channels: int) -> dict[str, int]:
    dim = fusion["dim"]
    return {
        "dim": dim, "ffn_dim": fusion["ffn_dim"], "num_heads": fusion["num_heads"],
        "num_layers": fusion["num_layers"], "freq_dim": fusion["freq_dim"], "text_dim": fusion["text_dim"],
        "embed_hidden": 256 * math.ceil(int(8 * dim / 3) / 256),  # the audio embedding's SwiGLU: 2/3 of 4*dim
        "vocab_size": text["vocab_size"], "text_encoder_dim": fusion["text_dim"], "dim_ffn": text["dim_ffn"],
        "text_heads": text["num_heads"], "text_layers": text["encoder_layers"],
        "vae_dim": video_vae["dim"], "vae_dec_dim": video_vae["dec_dim"],
        "audio_vae_dim": audio_vae_dim, "vocoder_channels": vocoder_channels,
    }


_TINY = PRESETS["tiny"]
DIMS: dict[str, dict[str, int]] = {
    # ovi_fusion_11b / umt5_xxl_encoder / wan22_vae / mmaudio_vae_16k / bigvgan_vocoder_16k schema configs
    "full": _dims({"dim": 3072, "ffn_dim": 14336, "num_heads": 24, "num_layers": 30, "freq_dim": 256,
                   "text_dim": 4096},
                  {"vocab_size": 256384, "dim_ffn": 10240, "num_heads": 64, "encoder_layers": 24},
                  {"dim": 160, "dec_dim": 256}, 384, 1536),
    "tiny": _dims(_TINY.fusion, _TINY.text_encoder, _TINY.video_vae, _TINY.audio_vae_dim,
                  _TINY.vocoder_channels),
}
# The text encoder's own width is the fusion model's text width, and its head count is its own.
_RENAMES = {"text_encoder": {"dim": "text_encoder_dim", "num_heads": "text_heads"}}


def evaluate(size: int | str, dims: dict[str, int], module: str = "") -> int:
    """A named width: `name`, `k*name` or `name/k`."""
    if isinstance(size, int):
        return size
    factor, _, rest = size.rpartition("*")
    name, _, divisor = rest.partition("/")
    value = dims[_RENAMES.get(module, {}).get(name, name)]
    return value * int(factor or 1) // int(divisor or 1)


def _tensor_sizes(module: str, group: str, dims: dict[str, int]) -> list[tuple[int, int]]:
    """(elements, how many tensors have that shape) per shape of one group (one layer for a block group)."""
    return [(math.prod(evaluate(s, dims, module) for s in shape), count)
            for shape, count in SHAPES[module][group]]


def group_elements(module: str, group: str, dims: dict[str, int]) -> int:
    """Elements of one group (one layer for a block group)."""
    return sum(size * count for size, count in _tensor_sizes(module, group, dims))


def module_elements(module: str, dims: dict[str, int]) -> int:
    return sum(group_elements(module, g, dims) * (dims[LAYERS[module]] if g.endswith("block") else 1)
               for g in SHAPES[module])


def module_bytes(module: str, dims: dict[str, int], element_bytes: int) -> int:
    """Bytes of a module held in the compute dtype (`element_bytes`), float32 groups at 4 bytes."""
    total = 0
    for group in SHAPES[module]:
        layers = dims[LAYERS[module]] if group.endswith("block") else 1
        total += (group_elements(module, group, dims) * layers
                  * (4 if group in FLOAT32_GROUPS else element_bytes))
    return total


def largest_tensor(module: str, group: str, dims: dict[str, int]) -> tuple[int, int]:
    """(elements of the group's largest tensor, how many of the group's tensors have that many); for a block
    group (`*_block`), counted in one block."""
    sizes = _tensor_sizes(module, group, dims)
    largest = max(size for size, _ in sizes)
    return largest, sum(count for size, count in sizes if size == largest)


def block_pair_bytes(dims: dict[str, int], element_bytes: int) -> int:
    """One video block and one audio block: the unit cpu_offload streams."""
    return sum(group_elements("fusion", g, dims) for g in ("video_block", "audio_block")) * element_bytes


SHAPES: dict[str, dict[str, tuple[tuple[Shape, int], ...]]] = {
    'fusion': {
        'audio_block': ((('dim', 'dim'), 10), (('dim', 'ffn_dim'), 1), (('dim',), 20),
            (('ffn_dim', 'dim'), 1), (('ffn_dim',), 1), ((1, 6, 'dim'), 1),),
        'audio_rest': ((('6*dim', 'dim'), 1), (('6*dim',), 1), (('dim', 'dim'), 2),
            (('dim', 'embed_hidden', 7), 1), (('dim', 'freq_dim'), 1), (('dim', 'text_dim'), 1),
            (('dim', 20, 7), 1), (('dim',), 5), (('embed_hidden', 'dim', 7), 2), ((1, 2, 'dim'), 1),
            ((20, 'dim'), 1), ((20,), 1),),
        'video_block': ((('dim', 'dim'), 10), (('dim', 'ffn_dim'), 1), (('dim',), 20),
            (('ffn_dim', 'dim'), 1), (('ffn_dim',), 1), ((1, 6, 'dim'), 1),),
        'video_rest': ((('6*dim', 'dim'), 1), (('6*dim',), 1), (('dim', 'dim'), 2),
            (('dim', 'freq_dim'), 1), (('dim', 'text_dim'), 1), (('dim', 48, 1, 2, 2), 1), (('dim',), 5),
            ((1, 2, 'dim'), 1), ((192, 'dim'), 1), ((192,), 1),),
    },
    'text_encoder': {
        'block': ((('dim', 'dim'), 4), (('dim', 'dim_ffn'), 1), (('dim',), 2), (('dim_ffn', 'dim'), 2),
            ((32, 'num_heads'), 1),),
        'rest': ((('dim',), 1), (('vocab_size', 'dim'), 1),),
    },
    'video_vae': {
        'decoder': ((('12*vae_dec_dim', '4*vae_dec_dim', 1, 1), 1), (('12*vae_dec_dim',), 1),
            (('2*vae_dec_dim', '2*vae_dec_dim', 3, 3), 1), (('2*vae_dec_dim', '2*vae_dec_dim', 3, 3, 3), 5),
            (('2*vae_dec_dim', '4*vae_dec_dim', 1, 1, 1), 1),
            (('2*vae_dec_dim', '4*vae_dec_dim', 3, 3, 3), 1), (('2*vae_dec_dim', 1, 1, 1), 6),
            (('2*vae_dec_dim',), 8), (('4*vae_dec_dim', '4*vae_dec_dim', 1, 1), 1),
            (('4*vae_dec_dim', '4*vae_dec_dim', 3, 3), 2),
            (('4*vae_dec_dim', '4*vae_dec_dim', 3, 3, 3), 16), (('4*vae_dec_dim', 1, 1), 1),
            (('4*vae_dec_dim', 1, 1, 1), 17), (('4*vae_dec_dim', 48, 3, 3, 3), 1), (('4*vae_dec_dim',), 20),
            (('8*vae_dec_dim', '4*vae_dec_dim', 3, 1, 1), 2), (('8*vae_dec_dim',), 2),
            (('vae_dec_dim', '2*vae_dec_dim', 1, 1, 1), 1), (('vae_dec_dim', '2*vae_dec_dim', 3, 3, 3), 1),
            (('vae_dec_dim', 'vae_dec_dim', 3, 3, 3), 5), (('vae_dec_dim', 1, 1, 1), 6),
            (('vae_dec_dim',), 7), ((12, 'vae_dec_dim', 3, 3, 3), 1), ((12,), 1),),
        'encoder': ((('12*vae_dim', '4*vae_dim', 1, 1), 1), (('12*vae_dim',), 1),
            (('2*vae_dim', '2*vae_dim', 3, 1, 1), 1), (('2*vae_dim', '2*vae_dim', 3, 3), 1),
            (('2*vae_dim', '2*vae_dim', 3, 3, 3), 3), (('2*vae_dim', 'vae_dim', 1, 1, 1), 1),
            (('2*vae_dim', 'vae_dim', 3, 3, 3), 1), (('2*vae_dim', 1, 1, 1), 4), (('2*vae_dim',), 7),
            (('4*vae_dim', '2*vae_dim', 1, 1, 1), 1), (('4*vae_dim', '2*vae_dim', 3, 3, 3), 1),
            (('4*vae_dim', '4*vae_dim', 1, 1), 1), (('4*vae_dim', '4*vae_dim', 3, 1, 1), 1),
            (('4*vae_dim', '4*vae_dim', 3, 3), 1), (('4*vae_dim', '4*vae_dim', 3, 3, 3), 11),
            (('4*vae_dim', 1, 1), 1), (('4*vae_dim', 1, 1, 1), 12), (('4*vae_dim',), 16),
            (('vae_dim', 'vae_dim', 3, 3), 1), (('vae_dim', 'vae_dim', 3, 3, 3), 4),
            (('vae_dim', 1, 1, 1), 5), (('vae_dim', 12, 3, 3, 3), 1), (('vae_dim',), 6),
            ((96, '4*vae_dim', 3, 3, 3), 1), ((96,), 1),),
        'latent_convs': (((48, 48, 1, 1, 1), 1), ((48,), 1), ((96, 96, 1, 1, 1), 1), ((96,), 1),),
    },
    'audio_codec': {
        'mel_buffers': (((1024,), 1), ((80, 513), 1),),
        'vae': ((('12*audio_vae_dim', '4*audio_vae_dim', 1), 2),
            (('2*audio_vae_dim', '2*audio_vae_dim', 3), 9), (('2*audio_vae_dim', '4*audio_vae_dim', 1), 1),
            (('2*audio_vae_dim', '4*audio_vae_dim', 3), 1), (('2*audio_vae_dim', 'audio_vae_dim', 1), 1),
            (('2*audio_vae_dim', 'audio_vae_dim', 3), 1), (('4*audio_vae_dim', '2*audio_vae_dim', 1), 1),
            (('4*audio_vae_dim', '2*audio_vae_dim', 3), 1), (('4*audio_vae_dim', '4*audio_vae_dim', 1), 2),
            (('4*audio_vae_dim', '4*audio_vae_dim', 3), 17), (('4*audio_vae_dim', 20, 3), 1),
            (('audio_vae_dim', '2*audio_vae_dim', 1), 1), (('audio_vae_dim', '2*audio_vae_dim', 3), 1),
            (('audio_vae_dim', 'audio_vae_dim', 1), 2), (('audio_vae_dim', 'audio_vae_dim', 3), 9),
            (('audio_vae_dim', 80, 3), 1), ((), 2), ((1, 80, 1), 2), ((40, '4*audio_vae_dim', 3), 1),
            ((80, 'audio_vae_dim', 3), 1),),
        'vocoder': ((('vocoder_channels', 'vocoder_channels/2', 8), 1), (('vocoder_channels', 80, 7), 1),
            (('vocoder_channels',), 1), (('vocoder_channels/16', 'vocoder_channels/16', 11), 6),
            (('vocoder_channels/16', 'vocoder_channels/16', 3), 6),
            (('vocoder_channels/16', 'vocoder_channels/16', 7), 6),
            (('vocoder_channels/16', 'vocoder_channels/32', 4), 1), (('vocoder_channels/16',), 55),
            (('vocoder_channels/2', 'vocoder_channels/2', 11), 6),
            (('vocoder_channels/2', 'vocoder_channels/2', 3), 6),
            (('vocoder_channels/2', 'vocoder_channels/2', 7), 6),
            (('vocoder_channels/2', 'vocoder_channels/4', 8), 1), (('vocoder_channels/2',), 55),
            (('vocoder_channels/32', 'vocoder_channels/32', 11), 6),
            (('vocoder_channels/32', 'vocoder_channels/32', 3), 6),
            (('vocoder_channels/32', 'vocoder_channels/32', 7), 6),
            (('vocoder_channels/32', 'vocoder_channels/64', 4), 1), (('vocoder_channels/32',), 55),
            (('vocoder_channels/4', 'vocoder_channels/4', 11), 6),
            (('vocoder_channels/4', 'vocoder_channels/4', 3), 6),
            (('vocoder_channels/4', 'vocoder_channels/4', 7), 6),
            (('vocoder_channels/4', 'vocoder_channels/8', 4), 1), (('vocoder_channels/4',), 55),
            (('vocoder_channels/64', 'vocoder_channels/64', 11), 6),
            (('vocoder_channels/64', 'vocoder_channels/64', 3), 6),
            (('vocoder_channels/64', 'vocoder_channels/64', 7), 6), (('vocoder_channels/64',), 57),
            (('vocoder_channels/8', 'vocoder_channels/16', 4), 1),
            (('vocoder_channels/8', 'vocoder_channels/8', 11), 6),
            (('vocoder_channels/8', 'vocoder_channels/8', 3), 6),
            (('vocoder_channels/8', 'vocoder_channels/8', 7), 6), (('vocoder_channels/8',), 55),
            ((1, 'vocoder_channels/64', 7), 1), ((1, 1, 12), 218), ((1,), 1),),
    },
}
