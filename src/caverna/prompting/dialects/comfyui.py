"""ComfyUI: a complete API-format text-to-image graph with every input filled in.

Node ids are fixed so a stored graph can be compared across template versions.
"""

from __future__ import annotations

from typing import Any

from caverna.prompting.dialects.base import (
    CompiledPrompt,
    Dialect,
    compiled,
    derived_seed,
    dimensions,
    sd_prompt,
)
from caverna.prompting.spec import PromptSpec

NAME = "comfyui"
SIZE_MULTIPLE = 64
OUTPUT_NODE = "9"


def compile_comfyui(spec: PromptSpec) -> CompiledPrompt:
    technical = spec.pack.model.foundation.technical
    settings = technical.providers.comfyui
    prompt = sd_prompt(spec)
    negative = ", ".join(spec.negative)
    width, height = dimensions(spec.params.aspect_ratio, technical.megapixels, SIZE_MULTIPLE)
    warnings = []
    seed = spec.params.seed
    if seed is None:
        seed = derived_seed(spec.params_hash)
        warnings.append("no seed given: ComfyUI needs one, so it was derived from the parameters")
    graph: dict[str, Any] = {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "seed": seed,
                "steps": settings.steps,
                "cfg": settings.cfg,
                "sampler_name": settings.sampler_name,
                "scheduler": settings.scheduler,
                "denoise": 1.0,
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": settings.checkpoint}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        OUTPUT_NODE: {
            "class_type": "SaveImage",
            "inputs": {"images": ["8", 0], "filename_prefix": settings.filename_prefix},
        },
    }
    return compiled(
        spec,
        NAME,
        prompt=prompt,
        negative_prompt=negative,
        payload={"prompt": graph, "output_node": OUTPUT_NODE},
        seed=seed,
        warnings=warnings,
    )


DIALECT = Dialect(NAME, "ComfyUI", compile_comfyui, None)
