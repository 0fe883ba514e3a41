"""How far step reuse and DPM-Solver++ move the output from exact DDIM sampling: the golden U-Net and VAE (random
weights in the published formats, tests/data/golden) regenerate the mouth of 8 real aligned demo faces; printed are
the deep-branch evaluations and the max / mean difference in grey levels inside the mouth mask, and the same for
another seed (how much the output varies anyway).

    python scripts/bench_step_reuse.py [--steps 20] [--out bench_step_reuse.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import golden  # noqa: E402
from test_pipeline_chunk import golden_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--out", type=Path, default=Path("bench_step_reuse.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny models: threads cost more than they give
    pipe, io = golden_pipeline(), golden("pipeline_io")
    calls = []
    pipe.unet.mid_block.register_forward_hook(lambda *_: calls.append(1))
    mouth = pipe.mask[0, 0] < 0.5

    def run(steps: int, noise=io["init_noise"], **options) -> tuple[torch.Tensor, int]:
        calls.clear()
        out = pipe.sample_chunk(io["faces_uint8"], io["audio_embeds"], noise, steps, args.guidance, **options)
        return ((out + 1) * 127.5).clamp(0, 255)[:, :, mouth], len(calls)

    exact, _ = run(args.steps)
    other_seed = torch.randn(io["init_noise"].shape, generator=torch.Generator().manual_seed(1))
    runs = {f"step_reuse_{n}": dict(step_reuse=n) for n in (2, 3, 5)}
    runs["dpm++_half_steps"] = dict(scheduler="dpm++")
    runs["another_seed"] = dict(noise=other_seed)
    result = {"steps": args.steps, "frames": len(io["faces_uint8"]), "resolution": pipe.resolution, "runs": {}}
    for name, options in runs.items():
        steps = args.steps // 2 if name.startswith("dpm") else args.steps
        out, deep = run(steps, **options)
        error = (out - exact).abs()
        result["runs"][name] = {"steps": steps, "deep_evaluations": deep, "max": round(error.max().item(), 2),
                                "mean": round(error.mean().item(), 3)}
        print(f"{name:>18}: {deep:3d} deep evaluations of {steps}, mouth max {error.max():6.2f} "
              f"mean {error.mean():6.3f} grey levels")
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
