"""Invariants of every task, in 2D and 3D, against independent references."""
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
from synth_helpers import disc_foreground, smooth_image

import synth
from synth.kernels import gaussian_radius
from synth.tasks.masks import render

SHAPES = {"2d": (72, 80), "3d": (28, 36, 40)}


def layout(shape) -> str:
    return "HW" if len(shape) == 2 else "DHW"
ALL_TASKS = sorted(synth.TASKS)


def _dilation_radius(record) -> int:
    """How far outside the mask a task may change pixels: the blur support of the density
    tasks, nothing for the others."""
    sigmas = [lesion.get("blur_sigma", 0.0) for lesion in record.params["lesions"]]
    return max([gaussian_radius(s) for s in sigmas if s > 0], default=0)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("task", ALL_TASKS)
def test_task_invariants(task, dims):
    shape = SHAPES[dims]
    image = smooth_image(shape, seed=11)
    foreground = disc_foreground(shape)
    for seed in range(4):
        out, mask, record = synth.synthesize(image, rng=seed, task=task, foreground=foreground, layout=layout(shape))
        assert record.task == task
        assert out.dtype == np.float32 and out.shape == shape
        assert mask.dtype == np.float32 and mask.shape == shape
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert 0.0 <= out.min() and out.max() <= 1.0
        # the mask is empty exactly for identity
        assert (mask.sum() == 0) == (task == "identity")
        if task == "identity":
            assert np.array_equal(out, image)
            continue
        # local: nothing changes outside the (dilated) mask
        r = _dilation_radius(record)
        region = ndi.binary_dilation(mask > 0, np.ones((2 * r + 1,) * len(shape), bool)) if r else mask > 0
        assert np.array_equal(out[~region], image[~region])
        assert not np.array_equal(out, image)
        # 1..max_anomalies lesions
        assert 1 <= len(record.params["lesions"]) <= 2


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_at_least_half_of_each_anomaly_lies_on_the_anatomy(dims):
    shape = SHAPES[dims]
    image = smooth_image(shape)
    foreground = disc_foreground(shape, 0.3)
    for task in ("cutpaste", "gaussian_intensity", "pathology_texture", "source_deformation", "poisson"):
        for seed in range(6):
            _, _, record = synth.synthesize(image, rng=seed, task=task, foreground=foreground, layout=layout(shape))
            for lesion in record.params["lesions"]:
                rendered = render(lesion["mask"], shape)
                on = np.count_nonzero(foreground[rendered.window] & rendered.mask)
                assert on >= 0.5 * np.count_nonzero(rendered.mask)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_guided_deformation_pulls_no_tissue_across_the_anatomy_edge(dims):
    shape = SHAPES[dims]
    foreground = disc_foreground(shape, 0.3)
    # anatomy bright (>= 0.5), background dark (0): any background read into the anatomy
    # would lower a value below 0.5 (bilinear mixing), any change outside shows at once
    image = np.where(foreground, 0.5 + 0.5 * smooth_image(shape, seed=3), 0.0).astype(np.float32)
    for seed in range(8):
        out, mask, record = synth.synthesize(image, rng=seed, task="guided_deformation", foreground=foreground,
                                               layout=layout(shape))
        assert np.array_equal(out[~foreground], image[~foreground])
        assert out[foreground].min() >= 0.5
        assert mask.sum() > 0 and np.all(foreground[mask > 0])
        for lesion in record.params["lesions"]:
            centre = tuple(int(round(c)) for c in lesion["mask"]["centre"])
            assert foreground[centre]  # the centre lies inside the anatomy


def test_source_deformation_matches_map_coordinates():
    """The fused warp against scipy's order-1 interpolation at positions computed in numpy."""
    image = smooth_image((64, 64), seed=2)
    out, mask, record = synth.synthesize(image, rng=5, task="source_deformation", config=synth.SynthesisConfig(
        max_anomalies=1))
    lesion = record.params["lesions"][0]
    centre = np.asarray(lesion["mask"]["centre"])
    inv = np.linalg.inv(np.asarray(lesion["mask"]["matrix"]))
    alpha = lesion["strength"] if lesion["direction"] == "source" else 1.0 / lesion["strength"]
    p = np.indices(image.shape).reshape(2, -1).T.astype(np.float64)
    offset = p - centre
    d = np.linalg.norm(offset @ inv.T, axis=1)
    factor = np.where(d < 1.0, np.where(d > 0, d, 1.0) ** (alpha - 1.0), 1.0)
    factor[d == 0] = 0.0
    positions = centre + factor[:, None] * offset
    expected = ndi.map_coordinates(image.astype(np.float64), positions.T, order=1, mode="nearest")
    assert np.abs(out.ravel() - expected).max() < 1e-5


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_guided_deformation_matches_its_formula(dims):
    """The tabulated, bounded warp against the formula evaluated exactly in numpy:
    u = -k (1 - d^2)^s (p - c), shortened to |u| <= EDT(p) - 1.75, read by scipy's order-1
    interpolation; the mask is exactly the set of moved pixels."""
    shape = SHAPES[dims]
    image = smooth_image(shape, seed=6)
    foreground = disc_foreground(shape, 0.3)
    room = ndi.distance_transform_edt(foreground)
    p = np.indices(shape).reshape(len(shape), -1).T.astype(np.float64)
    bound_bound = 0
    for seed in range(6):
        out, mask, record = synth.synthesize(image, rng=seed, task="guided_deformation", foreground=foreground,
                                             layout=layout(shape))
        expected = image.astype(np.float64)
        moved = np.zeros(shape, bool)
        certain = np.ones(p.shape[0], bool)
        for lesion in record.params["lesions"]:
            offset = p - np.asarray(lesion["mask"]["centre"])
            t = ((offset @ np.linalg.inv(np.asarray(lesion["mask"]["matrix"])).T) ** 2).sum(axis=1)
            u = -lesion["k"] * np.clip(1.0 - t, 0.0, None)[:, None] ** lesion["stiffness"] * offset
            norm = np.linalg.norm(u, axis=1)
            limit = room.ravel() - 1.75
            keep = np.where(norm > limit, np.clip(limit, 0.0, None) / np.maximum(norm, 1e-300), 1.0)
            bound_bound += int(np.count_nonzero((keep < 1.0) & (norm > 0)))
            u *= keep[:, None]
            expected = ndi.map_coordinates(expected, (p + u).T, order=1, mode="nearest").reshape(shape)
            certain &= np.abs(t - 1.0) > 1e-9  # pixels on the rim may round either way
            moved |= (np.abs(u).sum(axis=1) > 0).reshape(shape)
        assert np.abs(out - expected).max() < 2e-5  # the table is accurate to about 1e-6 here
        assert np.array_equal((mask > 0)[certain.reshape(shape)], moved[certain.reshape(shape)])
    assert bound_bound > 0  # the foreground bound was exercised


def test_gaussian_intensity_change_is_bounded_by_gamma():
    image = np.full((64, 64), 0.5, np.float32)
    for seed in range(6):
        out, mask, record = synth.synthesize(image, rng=seed, task="gaussian_intensity",
                                             config=synth.SynthesisConfig(max_anomalies=1))
        gamma = record.params["lesions"][0]["gamma"]
        assert 0.4 <= abs(gamma) <= 0.6
        delta = out - image
        assert np.abs(delta).max() <= abs(gamma) + 1e-6
        assert np.sign(delta[np.abs(delta) > 1e-6]).min() == np.sign(delta[np.abs(delta) > 1e-6]).max() == np.sign(gamma)


def test_pathology_texture_follows_the_blend_formula():
    """Inside the mask core (blurred weight 1) X' = X (1 - beta) + beta T' with T' in [0, 1]."""
    image = smooth_image((64, 64), seed=4)
    for seed in range(4):
        out, mask, record = synth.synthesize(image, rng=seed, task="pathology_texture",
                                             config=synth.SynthesisConfig(max_anomalies=1, modality="chest_xray"))
        lesion = record.params["lesions"][0]
        beta = lesion["beta"]
        assert 0.2 <= beta <= 0.8 and lesion["texture"]["name"] in {"ground_glass", "consolidation", "nodule"}
        texture = (out - image * (1 - beta)) / beta  # valid where the blurred weight is 1
        r = gaussian_radius(lesion["blur_sigma"])
        core = ndi.binary_erosion(mask > 0, np.ones((2 * r + 1, 2 * r + 1)))
        if core.any():
            assert texture[core].min() >= -1e-4 and texture[core].max() <= 1 + 1e-4


def test_perlin_masks_work_at_any_size_and_use_every_lattice():
    lattices = set()
    for shape in [(37, 101), (224, 224), (50, 60), (17, 23, 29)]:
        image = smooth_image(shape)
        config = synth.SynthesisConfig(mask=synth.MaskConfig(kinds=(("perlin", 1.0),)), max_anomalies=1)
        for seed in range(40 if len(shape) == 2 else 6):
            _, mask, record = synth.synthesize(image, rng=seed, task="cutpaste", config=config, layout=layout(shape))
            params = record.params["lesions"][0]["mask"]
            if params["kind"] != "perlin":  # the fallback shape when no Perlin draw was accepted
                continue
            lattices.update(params["lattice"])
            envelope = render({"kind": "ellipse", "centre": params["centre"], "matrix": params["matrix"]}, shape)
            inside = mask[envelope.window][envelope.mask].sum()
            assert inside == mask.sum()  # nothing outside the envelope
            assert 0.25 <= inside / envelope.mask.sum() <= 0.9  # the accepted coverage range
    assert lattices == {1, 2, 4, 8, 16, 32}  # 2 ** U{0..5}, not only the lowest frequency


def test_perlin_kernel_matches_a_numpy_reference():
    """Unrotated 2D Perlin noise (two octaves) against a direct numpy evaluation of the
    definition: hashed gradients at lattice points, quintic fade, bilinear blend."""
    from synth.kernels.noise import OCTAVE_SHIFT
    from synth.tasks.masks import perlin_field, perlin_tables

    shape, lattice, seed = (30, 45), (3, 5), 123
    field = perlin_field(shape, lattice, 0.0, seed, octaves=2, persistence=0.5)
    perm, gy, gx = perlin_tables(seed, 2)

    def fade(t):
        return 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3

    expected = np.zeros(shape)
    for octave in range(2):
        iy, ix = np.meshgrid((np.arange(shape[0]) + 0.5) / shape[0] * lattice[0] * 2 ** octave,
                             (np.arange(shape[1]) + 0.5) / shape[1] * lattice[1] * 2 ** octave, indexing="ij")
        iy, ix = iy + OCTAVE_SHIFT * octave, ix + OCTAVE_SHIFT * octave
        y0, x0 = np.floor(iy).astype(int), np.floor(ix).astype(int)
        ty, tx = iy - y0, ix - x0

        def corner(dy, dx):
            h = perm[(perm[(y0 + dy) % 256] + x0 + dx) % 256]
            return gy[h] * (ty - dy) + gx[h] * (tx - dx)

        top = corner(0, 0) + fade(tx) * (corner(0, 1) - corner(0, 0))
        bottom = corner(1, 0) + fade(tx) * (corner(1, 1) - corner(1, 0))
        expected += 0.5 ** octave * (top + fade(ty) * (bottom - top))
    assert np.abs(field - expected).max() < 1e-5


@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
def test_shape_areas_match_their_matrices(kind):
    """Rasterised area against the analytic area |det A| * (pi or 4)."""
    matrix = np.array([[18.0, 5.0], [-4.0, 11.0]])
    lesion = render({"kind": kind, "centre": [60.0, 70.0], "matrix": matrix.tolist()}, (128, 140))
    analytic = abs(np.linalg.det(matrix)) * (math.pi if kind == "ellipse" else 4.0)
    assert abs(lesion.mask.sum() - analytic) / analytic < 0.03


def test_pool_draws_families_equally_and_variants_equally():
    pool = synth.TaskPool()
    image = smooth_image((16, 16))[None]
    counts = {name: 0 for name in synth.TASKS}
    n = 2000
    for seed in range(n):
        record, _ = pool.sample(image, seed=seed)
        counts[record.task] += 1
    # the pool's own draws, checked against method.md: 1/4 identity, 1/8 each other task
    for name, count in counts.items():
        expected = n * (0.25 if name == "identity" else 0.125)
        assert abs(count - expected) < 4 * math.sqrt(expected), (name, count)


def test_custom_probabilities_are_respected():
    config = synth.SynthesisConfig(task_weights=(("poisson", 1.0), ("source_deformation", 0.0)))
    image = smooth_image((40, 40))
    tasks = {synth.synthesize(image, rng=s, config=config).record.task for s in range(10)}
    assert tasks == {"poisson"}


def test_cutpaste_from_another_image_needs_that_image_to_replay():
    image = smooth_image((48, 48), seed=1)
    other = smooth_image((48, 48), seed=9)
    out, mask, record = synth.synthesize(image, rng=3, task="cutpaste", source=other)
    again, _ = synth.replay(image, record, source=other)
    assert np.array_equal(out, again)
    # hard paste: inside the mask the values come from the other image's range of values
    assert not np.array_equal(out[mask > 0], image[mask > 0])


def test_organ_profiles_refuse_a_stiffness_below_two():
    """The guided warp's tabulated profile is accurate from stiffness 2 up."""
    from synth.profiles import modalities, register_modality

    organ = {"organ": "soft", "radius": [0.1, 0.2], "max_displacement": [0.01, 0.02], "stiffness": [1.5, 3.0]}
    with pytest.raises(ValueError, match="stiffness"):
        register_modality("too_soft", [], organ)
    assert "too_soft" not in modalities()


def test_poisson_is_clipped_where_the_solve_overshoots(monkeypatch):
    """Poisson is the one structural task whose output can leave [0, 1]: it must keep its clip
    (it once inherited CutPaste's "keeps range" flag)."""
    from synth.tasks.structural import Poisson

    yy, xx = np.mgrid[:64, :64]
    image = (((yy // 4) + (xx // 4)) % 2).astype(np.float32) * 0.98 + 0.01  # sharp 0.01 / 0.99 squares
    outs = [synth.synthesize(image, rng=s, task="poisson").image for s in range(10)]
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outs)
    monkeypatch.setattr(Poisson, "keeps_range", True)
    unclipped = [synth.synthesize(image, rng=s, task="poisson").image for s in range(10)]
    assert any(u.min() < 0.0 or u.max() > 1.0 for u in unclipped)  # the case above is a real one
