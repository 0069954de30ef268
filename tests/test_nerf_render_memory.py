"""Rendering a large image holds a bounded amount of memory, whatever the image size: eval-mode
rendering (ns-eval, ns-render, the viewer, a run's eval images) evaluates the field front to back in
bounded rounds, where it once evaluated every sample of a 4,096-ray chunk in one call -- on a
capture, 4,096 rays x ~150-300 marched samples -- and a training process, which keeps freed memory
for reuse, grew by gigabytes an eval image (issue 30: killed at 24 GB on a 720x1280 capture)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Rendered in a fresh process set up as a training run is (glibc keeping freed memory), so that its
# peak RSS is the rendering's alone: bn-diner-cpu's field, untrained but dense (every ray turns
# opaque), on a contracted capture whose grid is full -- every cell marched, ~150 samples a ray.
RENDER = textwrap.dedent("""
    import json, resource, sys, torch
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.scene_box import SceneBox
    from bn_nerf.nerf.method_configs import bn_diner_cpu
    from bn_nerf.runtime import keep_freed_memory

    torch.manual_seed(0)
    torch.set_num_threads(1)
    keep_freed_memory()
    config = bn_diner_cpu.config.pipeline.model
    config.scene_contraction = "on"
    config.collider_params = {"near_plane": 0.05, "far_plane": 1000.0}
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1)
    with torch.no_grad():
        model.field.density_head.net.bias.add_(60.0)  # softplus: a density of ~60, opaque within ~10 samples
    model.eval()
    side = int(sys.argv[1])
    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=side / 2.0, fy=side / 2.0, cx=side / 2.0,
                     cy=side / 2.0, width=side, height=side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outputs = model.get_outputs_for_camera(camera)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**10
    marched, _ = model.march(camera.generate_rays(camera_indices=0).flatten(), stratified=False)
    print(json.dumps({"growth_mb": growth, "rays": side * side, "marched": len(marched.ray_indices),
                      "evaluated": int(outputs["num_samples_per_ray"].sum()),
                      "opaque": float(outputs["accumulation"].min())}))
""")

# Peak growth allowed while rendering: a round of 4,096 rays x 32 samples through the field plus the
# chunk's marching took ~200 MB here; one 4,096-ray chunk of every sample took ~2 GB.
MAX_GROWTH_MB = 700


def test_rendering_an_image_many_chunks_large_stays_under_a_fixed_memory_bound():
    side = 128  # 16,384 rays: 4 chunks of 4,096
    result = subprocess.run([sys.executable, "-c", RENDER, str(side)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["marched"] > 150 * figures["rays"]  # what one call per chunk would have held
    assert figures["opaque"] > 0.99 and figures["evaluated"] < figures["marched"] / 4
    assert figures["growth_mb"] < MAX_GROWTH_MB, figures
