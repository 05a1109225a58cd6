"""Speed of the synthesis engine against the anchors of anchors.md, side by side in one run.

    .venv/bin/python benchmarks/synth_speed.py [--quick] [--json out.json]

Everything runs on one thread per process (numba, OpenCV, BLAS); the throughput test
uses 2 worker processes. Prints a markdown report (medians in ms, ratios measured in
this run) for benchmarks/RESULTS.md. The Poisson and deformation comparisons alternate blocks
of the anchor's calls and of ours over 15 rounds and report the median of the per-round ratios.
"""
from __future__ import annotations

import os

for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synth_images import brain_like, exact_solve, poisson_cases  # noqa: E402

import synth  # noqa: E402

cv2.setNumThreads(1)


def median_ms(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), 1e3 * float(np.mean(times))


def block_ms(fn, calls: int) -> float:
    """Mean ms per call over a block of ``calls`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e3 * (time.perf_counter() - t0) / calls


# Rounds of the side-by-side comparisons (Poisson, deformation): the per-round ratios of one run
# spread over 1.5-2x on this shared machine, so the median needs many of them to settle.
ROUNDS = 15


def interleaved_ms(fns: dict, calls: dict, rounds: int) -> dict:
    """Per-call ms of each function, as the median over ``rounds`` rounds in which every
    function runs one block in turn: a slow spell of the machine hits all of them alike, and
    blocks of many samples average over the sample-to-sample mix (one lesion or two)."""
    for fn in fns.values():
        block_ms(fn, 3)
    blocks = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            blocks[name].append(block_ms(fn, calls[name]))
    return {name: float(np.median(b)) for name, b in blocks.items()}, blocks


def per_task(shape, repeats, layout):
    image, fg = brain_like(shape)
    rows = {}
    for task in list(synth.TASKS) + [None]:
        seeds = iter(range(10 ** 9))
        med, mean = median_ms(lambda: synth.synthesize(image, rng=next(seeds), foreground=fg, task=task,
                                                       layout=layout), repeats)
        rows[task or "pool"] = (med, mean)
    return rows


def _throughput_worker(args):
    n, seed = args
    image, fg = brain_like((224, 224))
    for s in range(20):  # warm
        synth.synthesize(image, rng=s, foreground=fg)
    t0 = time.perf_counter()
    for s in synth.spawn_seeds(seed, n):
        synth.synthesize(image, rng=s, foreground=fg)
    return n, time.perf_counter() - t0


def throughput(processes, n):
    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_throughput_worker, [(5, 1)] * processes)  # start-up and warm-up out of the timing
        t0 = time.perf_counter()
        done = pool.map(_throughput_worker, [(n, 100 + i) for i in range(processes)])
        wall = time.perf_counter() - t0
    return sum(d[0] for d in done) / wall


def poisson_vs_opencv(repeats):
    rows = {}
    for label, target, source, mask in poisson_cases():
        ys, xs = np.nonzero(mask)
        win = (slice(ys.min() - 1, ys.max() + 2), slice(xs.min() - 1, xs.max() + 2))
        ours = lambda: synth.poisson_blend(target, source, mask)  # noqa: E731
        t8 = cv2.cvtColor((target * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        s8 = cv2.cvtColor((source * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        m8 = (mask * 255).astype(np.uint8)
        centre = ((xs.min() + xs.max() + 1) // 2, (ys.min() + ys.max() + 1) // 2)
        cv = lambda: cv2.seamlessClone(s8, t8, m8.copy(), centre, cv2.NORMAL_CLONE)  # noqa: E731
        medians, blocks = interleaved_ms({"ours": ours, "cv2": cv}, {"ours": repeats, "cv2": repeats // 3}, rounds=ROUNDS)
        ours_ms, cv_ms = medians["ours"], medians["cv2"]
        ratios = [c / o for c, o in zip(blocks["cv2"], blocks["ours"])]
        ref = exact_solve(target[win], source[win], mask[win])
        err_ours = 255 * float(np.abs(synth.poisson_blend(target, source, mask, clip=False)[win] - ref).max())
        cv_out = cv()[..., 0].astype(np.float64) / 255.0
        err_cv = 255 * float(np.abs(cv_out[win][mask[win]] - ref[mask[win]]).max())
        rows[label] = {"pixels": int(mask.sum()), "ours_ms": ours_ms, "cv2_ms": cv_ms, "speedup": float(np.median(ratios)),
                       "ours_err_grey": err_ours, "cv2_err_grey": err_cv}
    return rows


def deformation_vs_monai(repeats):
    import torch
    from monai.transforms import Rand2DElastic

    torch.set_num_threads(1)
    image, fg = brain_like((224, 224))
    elastic = Rand2DElastic(spacing=(30, 30), magnitude_range=(5, 6), prob=1.0, padding_mode="zeros")
    elastic.set_random_state(0)
    tensor = torch.from_numpy(image)[None]
    seeds = iter(range(10 ** 9))
    fns = {"monai": lambda: elastic(tensor)}
    for task in ("source_deformation", "guided_deformation"):
        fns[task] = lambda task=task: synth.synthesize(image, rng=next(seeds), foreground=fg, task=task)
    calls = {"monai": max(3, repeats // 10), "source_deformation": repeats, "guided_deformation": repeats}
    medians, blocks = interleaved_ms(fns, calls, rounds=ROUNDS)
    monai_ms = medians["monai"]
    rows = {"monai_Rand2DElastic_ms": monai_ms}
    # the warp alone over the whole frame (field + bilinear sampling fused), as MONAI does
    from synth import kernels

    frame = np.ascontiguousarray(image)[None].copy()  # warped in place, again and again
    inv = np.eye(2) / 160.0  # an ellipse that covers the whole 224x224 frame
    none = np.zeros((0, 0), np.float32)
    full = lambda: kernels.radial_warp_2d(frame, none, 0, 0, 224, 224, 111.5, 111.5, inv,  # noqa: E731
                                          kernels.GUIDED, 1.0, 0.5, 2.0, none, 1.75)
    rows["full_frame_warp"] = {"ms": median_ms(full, repeats)[0]}
    rows["full_frame_warp"]["speedup"] = monai_ms / rows["full_frame_warp"]["ms"]
    for task in ("source_deformation", "guided_deformation"):
        ratios = [m / t for m, t in zip(blocks["monai"], blocks[task])]
        rows[task] = {"ms": medians[task], "speedup": float(np.median(ratios)),
                      "speedup_range": [float(min(ratios)), float(max(ratios))]}
    return rows


def draem_perlin_mask(shape, rng):
    """The DRAEM recipe in numpy: gradient noise on a res-cell lattice (size must be a
    multiple of res), rotated with OpenCV, thresholded at 0.5."""
    res = (2 ** rng.integers(0, 6), 2 ** rng.integers(0, 6))
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0:res[0]:res[0] / shape[0], 0:res[1]:res[1] / shape[1]].transpose(1, 2, 0) % 1
    angles = 2 * np.pi * rng.random((res[0] + 1, res[1] + 1))
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tile(s0, s1):
        return np.repeat(np.repeat(gradients[s0[0]:s0[1], s1[0]:s1[1]], d[0], axis=0), d[1], axis=1)

    def dot(grad, sy, sx):
        return (np.stack((grid[:, :, 0] + sy, grid[:, :, 1] + sx), axis=-1) * grad[:shape[0], :shape[1]]).sum(-1)

    n00 = dot(tile([0, -1], [0, -1]), 0, 0)
    n10 = dot(tile([1, None], [0, -1]), -1, 0)
    n01 = dot(tile([0, -1], [1, None]), 0, -1)
    n11 = dot(tile([1, None], [1, None]), -1, -1)
    t = 6 * grid ** 5 - 15 * grid ** 4 + 10 * grid ** 3
    noise = np.sqrt(2) * ((n00 * (1 - t[..., 0]) + t[..., 0] * n10) * (1 - t[..., 1])
                          + t[..., 1] * (n01 * (1 - t[..., 0]) + t[..., 0] * n11))
    m = cv2.getRotationMatrix2D((shape[1] / 2, shape[0] / 2), rng.uniform(-90, 90), 1.0)
    noise = cv2.warpAffine(noise.astype(np.float32), m, (shape[1], shape[0]))
    return noise > 0.5


def perlin_vs_draem(repeats):
    rows = {}
    for size in (224, 512):
        shape = (size, size)
        rng = np.random.default_rng(0)
        draem_ms = median_ms(lambda: draem_perlin_mask(shape, rng), repeats)[0]
        cfg = synth.MaskConfig(kinds=(("perlin", 1.0),))
        g = np.random.default_rng(0)
        from synth.tasks.masks import sample_lesions

        ours_ms = median_ms(lambda: sample_lesions(g, shape, None, cfg, {"perlin": 1.0}, 1), repeats)[0]
        rows[size] = {"draem_numpy_ms": draem_ms, "ours_ms": ours_ms, "speedup": draem_ms / ours_ms}
    return rows


def first_sample_seconds():
    code = ("import time; t0 = time.perf_counter(); import numpy as np, synth; "
            "img = np.full((224, 224), 0.5, np.float32); "
            "[synth.synthesize(img, rng=s, task=t) for s, t in enumerate(synth.TASKS)]; "
            "print(time.perf_counter() - t0)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # make sure the cache is warm
    return min(float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                    text=True).stdout) for _ in range(3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--only", choices=("poisson",), help="run one comparison alone")
    args = parser.parse_args()
    if args.only == "poisson":
        report_poisson(poisson_vs_opencv(20 if args.quick else 100))
        return
    r = 20 if args.quick else 300
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "python": platform.python_version()}
    results["first_sample_s"] = first_sample_seconds()
    results["tasks_224"] = per_task((224, 224), r, "HW")
    results["pool_512"] = per_task((512, 512), max(10, r // 5), "HW")["pool"]
    results["pool_128_3d"] = per_task((128, 128, 128), max(5, r // 30), "DHW")
    results["poisson"] = poisson_vs_opencv(max(10, r // 3))
    results["deformation"] = deformation_vs_monai(r)
    results["perlin"] = perlin_vs_draem(max(10, r // 3))
    n = 200 if args.quick else 3000
    results["throughput_1proc"] = throughput(1, n)
    results["throughput_2proc"] = throughput(2, n)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(res):
    print(f"Machine: {res['machine']}, Python {res['python']}; one thread per process.\n")
    print("| task (224x224, one core) | median ms | mean ms |\n|---|---|---|")
    for name, (med, mean) in res["tasks_224"].items():
        print(f"| {name} | {med:.3f} | {mean:.3f} |")
    print(f"\n- whole pool at 512x512: median {res['pool_512'][0]:.2f} ms (mean {res['pool_512'][1]:.2f})")
    print("- 128^3 volume, per task (median ms): " + ", ".join(
        f"{k} {v[0]:.1f}" for k, v in res["pool_128_3d"].items()))
    print(f"- throughput, whole pool at 224x224: {res['throughput_1proc']:.0f} samples/s with 1 process, "
          f"{res['throughput_2proc']:.0f} samples/s with 2 processes")
    print(f"- fresh process, warm numba cache: first samples of all 7 tasks after {res['first_sample_s']:.2f} s "
          "(interpreter start and imports included)")
    report_poisson(res["poisson"])
    d = res["deformation"]
    print(f"\n| deformation (224x224) | ms | speed-up vs MONAI Rand2DElastic ({d['monai_Rand2DElastic_ms']:.2f} ms) |"
          "\n|---|---|---|")
    print(f"| full-frame field + warp (kernel) | {d['full_frame_warp']['ms']:.3f} | "
          f"{d['full_frame_warp']['speedup']:.1f}x |")
    for task in ("source_deformation", "guided_deformation"):
        low, high = d[task]["speedup_range"]
        print(f"| {task} (whole sample: mask, field, warp, record) | {d[task]['ms']:.3f} | "
              f"{d[task]['speedup']:.1f}x (rounds {low:.1f}-{high:.1f}x) |")
    print("\n| Perlin mask | DRAEM numpy ms | ours ms | speed-up |\n|---|---|---|---|")
    for size, row in res["perlin"].items():
        print(f"| {size}x{size} | {row['draem_numpy_ms']:.3f} | {row['ours_ms']:.3f} | {row['speedup']:.1f}x |")


def report_poisson(rows):
    print("\n| Poisson patch | pixels | ours ms | cv2.seamlessClone ms | speed-up | ours max error (grey levels) "
          "| cv2 max error |\n|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | {row['pixels']} | {row['ours_ms']:.3f} | {row['cv2_ms']:.3f} | "
              f"{row['speedup']:.1f}x | {row['ours_err_grey']:.2f} | {row['cv2_err_grey']:.1f} |")


if __name__ == "__main__":
    main()
