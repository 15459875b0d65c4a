"""Reading a first frame and writing the result: MP4 (H.264 + AAC) through PyAV, the one dependency that
ships both encoders in its wheels. A binary PPM first frame is read without it (the harness's i2v frames
are PPM gradients, so its variant and fidelity suites need no PyAV)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ovi_engine.variants import VariantSpec


def _av():  # type: ignore[no-untyped-def]
    try:
        import av
    except ImportError:
        raise RuntimeError("writing or reading media needs PyAV: pip install 'ovi-bench[video]'") from None
    return av


def write_mp4(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int) -> Path:
    """frames: uint8 [T, H, W, 3]; audio: float [samples] in [-1, 1], mono."""
    av = _av()
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames.shape[1], frames.shape[2]
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                                  format="rgb24")))
        container.mux(video.encode())
        block = sound.codec_context.frame_size or 1024
        for start in range(0, len(audio), block):
            chunk = audio[None, start : start + block].astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
    return path


def probe_mp4(path: Path) -> dict[str, float | int | str]:
    """Decode a file back: frame count, audio samples, durations and codecs (to prove it plays)."""
    av = _av()
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        info: dict[str, float | int | str] = {"video_codec": v.codec_context.name,
                                              "audio_codec": a.codec_context.name,
                                              "fps": float(v.average_rate), "sample_rate": a.rate}
        frames = samples = 0
        for packet in container.demux(v, a):
            for frame in packet.decode():
                if packet.stream is v:
                    frames += 1
                else:
                    samples += frame.samples
    info.update(video_frames=frames, audio_samples=samples)
    return info


def read_image(path: str | Path) -> torch.Tensor:
    """uint8 [H, W, 3] from an 8-bit binary PPM, or from any image file PyAV/FFmpeg can decode."""
    image = _read_ppm(Path(path))
    if image is not None:
        return image
    av = _av()
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    return torch.from_numpy(frame.to_ndarray(format="rgb24"))


# Netpbm P6: width, height and maxval separated by whitespace or # comments, then one whitespace byte.
_GAP = rb"(?:\s|#[^\n]*\n)+"
_PPM_HEADER = re.compile(rb"P6" + _GAP + rb"(\d+)" + _GAP + rb"(\d+)" + _GAP + rb"255\s")


def _read_ppm(path: Path) -> torch.Tensor | None:
    """An 8-bit (maxval 255) binary PPM's pixels; None for any other file, which goes to PyAV."""
    data = path.read_bytes()
    header = _PPM_HEADER.match(data)
    if header is None:
        return None
    width, height = int(header[1]), int(header[2])
    size = width * height * 3
    pixels = data[header.end():header.end() + size]
    if len(pixels) != size:
        raise ValueError(f"{path}: a {width}x{height} PPM holds {size} bytes of pixels, found {len(pixels)}")
    return torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(height, width, 3)


def resize_to_area(image: torch.Tensor, spec: VariantSpec, area: int | None = None) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, h, w] in [-1, 1], at the variant's area with sides multiples of 32."""
    h, w = spec.frame_size(image.shape[0], image.shape[1], area)
    x = image.permute(2, 0, 1)[None].float() / 127.5 - 1
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0].clamp(-1, 1)
