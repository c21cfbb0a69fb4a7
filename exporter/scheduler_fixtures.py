"""Writes test/fixtures/scheduler.json: diffusers' DDIMScheduler numbers for the engine's scheduler tests.

For several configs (SD 1.x epsilon, SD 2.x v-prediction, other spacings and beta schedules): the
inference timesteps, alphas_cumprod at a few indices, and `scheduler.step(...).prev_sample` (eta 0) for a
seeded latent and model output at a few timesteps. Run: `python -m exporter.scheduler_fixtures`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from .configs import SD_SCHEDULER

CONFIGS = {
    "sd15_epsilon_leading": dict(SD_SCHEDULER),
    "sd21_v_prediction_leading": {**SD_SCHEDULER, "prediction_type": "v_prediction"},
    "trailing": {**SD_SCHEDULER, "timestep_spacing": "trailing", "steps_offset": 0},
    "linspace_linear": {**SD_SCHEDULER, "timestep_spacing": "linspace", "beta_schedule": "linear", "beta_end": 0.02,
                        "steps_offset": 0},
    "cosine_alpha_to_one": {**SD_SCHEDULER, "beta_schedule": "squaredcos_cap_v2", "set_alpha_to_one": True},
}
STEPS = [10, 50]
ALPHA_INDICES = [0, 1, 250, 500, 999]


def main(out: str = "test/fixtures/scheduler.json") -> None:
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 3, generator=g)
    model_output = torch.randn(2, 3, generator=g)
    result = {"sample": sample.flatten().tolist(), "model_output": model_output.flatten().tolist(), "configs": {}}
    for name, config in CONFIGS.items():
        entry = {"config": config, "alphas_cumprod": {}, "runs": {}}
        s = DDIMScheduler.from_config(config)
        for i in ALPHA_INDICES:
            entry["alphas_cumprod"][str(i)] = float(s.alphas_cumprod[i])
        entry["final_alpha_cumprod"] = float(s.final_alpha_cumprod)
        for steps in STEPS:
            s = DDIMScheduler.from_config(config)
            s.set_timesteps(steps)
            ts = [int(t) for t in s.timesteps]
            picks = sorted({ts[0], ts[len(ts) // 2], ts[-1]}, reverse=True)
            entry["runs"][str(steps)] = {
                "timesteps": ts,
                "steps": {str(t): s.step(model_output, t, sample, eta=0.0).prev_sample.flatten().tolist() for t in picks},
            }
        result["configs"][name] = entry
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
