"""Ovi prompt formats: speech in ``<S>…<E>``, the audio description as ``<AUDCAP>…<ENDAUDCAP>`` (720x720_5s)
or as an ``Audio: …`` line (960 variants)."""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

_AUDCAP = re.compile(r"<AUDCAP>(.*?)<ENDAUDCAP>", re.DOTALL)
_AUDIO_LINE = re.compile(r"(?:^|\n)[ \t]*Audio:[ \t]*(.*?)[ \t]*$", re.DOTALL)
_SPEECH_TAGS = re.compile(r"<S>|<E>")


def audio_description(prompt: str) -> str | None:
    """The audio description in either format, or None."""
    if m := _AUDCAP.search(prompt):
        return m.group(1).strip()
    if m := _AUDIO_LINE.search(prompt):
        return m.group(1).strip()
    return None


def _without_description(prompt: str) -> str:
    return _AUDIO_LINE.sub("", _AUDCAP.sub("", prompt)).strip()


def format_prompt(prompt: str, prompt_format: str) -> str:
    """Put the audio description in the variant's format; a prompt in the other form is converted, with a
    warning, because the model was trained on one form only."""
    if prompt_format not in ("audcap", "audio_line"):
        raise ValueError(f"unknown prompt format {prompt_format!r}; expected 'audcap' or 'audio_line'")
    description = audio_description(prompt)
    if description is None:
        return prompt
    body = _without_description(prompt)
    converted = (
        f"{body} <AUDCAP>{description}<ENDAUDCAP>" if prompt_format == "audcap"
        else f"{body}\nAudio: {description}"
    )
    already = bool(_AUDCAP.search(prompt)) == (prompt_format == "audcap")
    if not already:
        log.warning("audio description converted to the %s format this variant was trained on", prompt_format)
        return converted
    return prompt


def clean_text(prompt: str) -> str:
    """The prompt for display: speech tags and the audio description removed."""
    return re.sub(r"[ \t]+", " ", _SPEECH_TAGS.sub("", _without_description(prompt))).strip()
