#!/usr/bin/env bash
# The supervised shape probes of README.md, in order (each ~2-4 min on 2 busy cores).
# v2 rows use the frozen old generator, kept by git only (supervised_probe.py says how to restore
# it); v3 rows the draft scenes of the shapes scene with BACKGROUNDS = light, dark, gradient (patch
# it back to rerun them).
set -euo pipefail
cd "$(dirname "$0")/../.."
P=".venv/bin/python experiments/demo_diagnosis/supervised_probe.py --steps 300 --num_train 4000"
$P --pixels                                  # v2 as the demo used it, no crop
$P --scene center_light_large --no_second    # v2 without the nuisances
$P --crop_min 0.6                            # v2 with the demo's crop (area >= 60%)
$P --size 64                                 # v2 at 64 px (64 patches)
$P --generator v3 --crop_min 0.8             # v3 draft: centred, 3 backgrounds, crop >= 80%
$P --generator v3 --crop_min 0.8 --scene light        # ... light backgrounds only
$P --generator v3 --crop_min 0.8 --scene light_large  # ... and large shapes only
