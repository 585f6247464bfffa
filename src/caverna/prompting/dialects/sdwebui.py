"""AUTOMATIC1111 / Forge txt2img: weighted tokens, a negative prompt, sizes in steps of 64."""

from __future__ import annotations

from typing import Any

from caverna.prompting.dialects.base import CompiledPrompt, Dialect, compiled, dimensions, sd_prompt
from caverna.prompting.spec import PromptSpec

NAME = "sdwebui"
SIZE_MULTIPLE = 64


def compile_sdwebui(spec: PromptSpec) -> CompiledPrompt:
    technical = spec.pack.model.foundation.technical
    settings = technical.providers.sdwebui
    prompt = sd_prompt(spec)
    negative = ", ".join(spec.negative)
    width, height = dimensions(spec.params.aspect_ratio, technical.megapixels, SIZE_MULTIPLE)
    payload: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": spec.params.seed if spec.params.seed is not None else -1,
        "sampler_name": settings.sampler,
        "scheduler": settings.scheduler,
        "steps": settings.steps,
        "cfg_scale": settings.cfg_scale,
        "width": width,
        "height": height,
        "batch_size": 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
    }
    if settings.checkpoint:
        payload["override_settings"] = {"sd_model_checkpoint": settings.checkpoint}
        payload["override_settings_restore_afterwards"] = True
    return compiled(
        spec, NAME, prompt=prompt, negative_prompt=negative, payload=payload, seed=spec.params.seed
    )


DIALECT = Dialect(NAME, "Stable Diffusion WebUI", compile_sdwebui, None)
