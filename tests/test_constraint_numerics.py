"""The constraint layer at the edges of floating point: equal members, ill-conditioned rows,
rounded totals, rank-deficient covariances, 16-bit outputs. Each answer is checked against an
exact one computed apart (closed forms, 50-digit arithmetic, bisection)."""

import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pdes import Dirichlet, Grid1D
from physml import ConstraintError, Ensemble, Gaussian, constrain, mass_conservation
from physml.constraints import BoundaryCondition, LinearConstraint, NonNegative, linear

F64 = torch.float64
GRID = Grid1D(33)


def euclidean(u: np.ndarray, G: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The nearest field to ``u`` meeting ``G u = b``, by the normal equations (well-conditioned
    ``G`` only)."""
    return u - G.T @ np.linalg.solve(G @ G.T, G @ u - b)


def values(output):
    """A tensor, a Gaussian's mean or an ensemble's members."""
    return output.mean if isinstance(output, Gaussian) else getattr(output, "samples", output)


# ------------------------------------------------------------------------- equal members


@pytest.mark.parametrize("members", [3, 6, 8])
def test_identical_members_move_as_the_euclidean_projection(members):
    """Equal members carry no covariance: the γ I fallback, the Euclidean projection. Their
    centred values are the round-off of their mean, which must not set the update's shape."""
    w, x = GRID.weights(), GRID.coordinates()
    base = torch.sin(torch.pi * x) + 0.3
    out = mass_conservation(GRID, torch.tensor(1.0, dtype=F64))(Ensemble(base.expand(members, 33)))
    expected = euclidean(base.numpy(), w.numpy()[None], np.array([1.0]))
    assert np.abs(out.samples.numpy() - expected).max() <= 1e-14


@pytest.mark.parametrize("members", [3, 6, 8])
def test_identical_members_meet_two_rows_as_the_euclidean_projection(members):
    w, x = GRID.weights(), GRID.coordinates()
    G, b = torch.stack([w, w * x]), torch.tensor([1.0, 0.4], dtype=F64)
    base = torch.sin(torch.pi * x) + 0.3
    out = LinearConstraint(G, b)(Ensemble(base.expand(members, 33)))
    expected = euclidean(base.numpy(), G.numpy(), b.numpy())
    assert np.abs(out.samples.numpy() - expected).max() <= 1e-14


def test_a_tiny_but_real_spread_still_sets_the_update():
    """Members ``base + s v``, ``s ∈ {-2⁻⁴⁰, 0, 2⁻⁴⁰}`` (all exact in float64, far above the
    round-off of their mean), have ``Σ ∝ v vᵀ``: the correction is ``v (w·x − M) / (w·v)``."""
    w, x = GRID.weights(), GRID.coordinates()
    base = torch.round(256 * torch.sin(torch.pi * x)) / 256 + 0.25
    v = torch.arange(33, dtype=F64) % 4 + 1
    X = base + 2.0**-40 * torch.tensor([-1.0, 0.0, 1.0], dtype=F64)[:, None] * v
    out = mass_conservation(GRID, torch.tensor(1.0, dtype=F64))(Ensemble(X)).samples
    expected = X - v * ((X @ w - 1.0) / (w @ v))[:, None]
    assert (out - expected).abs().max() <= 1e-14


def test_a_real_spread_among_many_members_sets_the_update():
    """3999 members ``base + c s v``, ``c ∈ {-1, 0, 1}``, ``s = 2⁻⁴⁰``: a spread of 1.5e-12 of
    the field, below ``2 m eps max|x|`` (a threshold that grows with the members) yet exact, as is
    their mean. The correction is ``v (w·x − M) / (w·v)``, not the Euclidean one along ``w``."""
    w, x = GRID.weights(), GRID.coordinates()
    base = torch.round(256 * torch.sin(torch.pi * x)) / 256 + 0.25
    v = torch.arange(33, dtype=F64) % 2 + 1
    c = torch.tensor([-1.0, 0.0, 1.0], dtype=F64).repeat(1333)
    X = base + 2.0**-40 * c[:, None] * v
    out = mass_conservation(GRID, torch.tensor(1.0, dtype=F64))(Ensemble(X)).samples
    expected = X - v * ((X @ w - 1.0) / (w @ v))[:, None]
    assert (out - expected).abs().max() <= 1e-14


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_a_real_spread_beside_a_large_value_all_members_share_sets_the_update(noise):
    """Members ``base + c s v``, ``c ∈ {-1, 0, 1}``, ``s = 2⁻⁴⁰``, all 1e6 at one point: that
    point has no spread, the others keep theirs. ``Σ = s² v′v′ᵀ`` (``v′`` zero at the shared
    point), ``P = s² (w·v′)²``; noise ``σ = noise · s (w·v′)``: the mean moves by ``K = Σw / (P +
    σ²)``, the members' spread scales by ``σ / √(P + σ²)`` (0: all meet the total; 1/√2)."""
    w, x = GRID.weights(), GRID.coordinates()
    base = torch.round(256 * torch.sin(torch.pi * x)) / 256 + 0.25
    v = (torch.arange(33, dtype=F64) % 4 + 1).index_fill(0, torch.tensor([16]), 0.0)
    s, c = 2.0**-40, torch.tensor([-1.0, 0.0, 1.0], dtype=F64)
    X = (base + s * c[:, None] * v).index_fill(-1, torch.tensor([16]), 1e6)
    total, along = 1.0 + 1e6 * w[16].item(), (w @ v).item()
    sigma = noise * s * along
    out = mass_conservation(GRID, torch.tensor(total, dtype=F64), noise=sigma)(Ensemble(X)).samples
    P = (s * along) ** 2
    mean = X[1] - s**2 * along * v * ((X[1] @ w).item() - total) / (P + sigma**2)
    expected = mean + (sigma / (P + sigma**2) ** 0.5) * s * c[:, None] * v
    assert (out - expected).abs().max() <= 1e-10  # the totals of 3e4 round by 4e-12 = 4 s
    if noise:  # the spread itself, to the members' round-off
        assert ((out - out[1]) - (expected - expected[1])).abs().max() <= 1e-2 * s


# ------------------------------------------------------------------------- ill-conditioned rows


@pytest.mark.parametrize("p", [10, 12, 13, 14])
def test_moment_rows_are_projected_to_the_exact_answer(p):
    """Moments ``∫ xʲ u``, ``j < p``, on 65 points: condition numbers 4e6 to 4e9. The exact
    projection in 50 digits; ``G Gᵀ`` squared them (an error of 0.18 at ``p = 13``)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    grid = Grid1D(65)
    x, w = grid.coordinates().numpy(), grid.weights().numpy()
    G = np.stack([w * x**j for j in range(p)])
    u = np.sin(3 * x) + 0.1 * np.random.default_rng(1).standard_normal(65)
    b = G @ np.exp(-x)
    out = LinearConstraint(torch.tensor(G), torch.tensor(b))(torch.tensor(u)).numpy()
    Gm, um, bm = mpmath.matrix(G.tolist()), mpmath.matrix(u.tolist()), mpmath.matrix(b.tolist())
    exact = np.array([float(v) for v in um - Gm.T * mpmath.lu_solve(Gm * Gm.T, Gm * um - bm)])
    assert np.abs(out - exact).max() <= 1e-6 * np.abs(exact).max()


NEARLY_DEPENDENT_PATHS = [
    ("tensor", "euclidean"),
    ("ensemble", "euclidean"),
    ("gaussian", "euclidean"),
    ("gaussian", "covariance"),
]


def nearly_dependent(kind, projection, difference):
    """``Σ u = 0`` and ``Σ u + δ u₃ = 1`` on 8 points, and an output of ``kind`` holding three
    random fields (a Gaussian of unit variances): the constraint, the fields, the output."""
    G = torch.ones(2, 8, dtype=F64)
    G[1, 3] += difference
    constraint = LinearConstraint(G, torch.tensor([0.0, 1.0], dtype=F64), projection=projection)
    u = torch.randn(3, 8, dtype=F64, generator=torch.Generator().manual_seed(12))
    output = {"tensor": u, "ensemble": Ensemble(u), "gaussian": Gaussian(u, torch.ones_like(u))}
    return constraint, u, output[kind]


@pytest.mark.parametrize("difference", [1e-5, 1e-7])
@pytest.mark.parametrize("kind, projection", NEARLY_DEPENDENT_PATHS)
def test_nearly_dependent_rows_are_projected_to_their_exact_answer(kind, projection, difference):
    """``u₃ = 1/δ``, the others share ``−1/δ``. The Euclidean projections (a tensor, HardC on an
    ensemble or a Gaussian, and the update of a Gaussian of unit variances) are accurate to
    ``cond(G) eps``, and values up to ``1/δ = 1e7`` still meet the rows to the round-off of the
    data (fields and targets of size 1): not refused."""
    constraint, u, output = nearly_dependent(kind, projection, difference)
    out = values(constraint(output))
    exact = u.clone()
    exact[:, 3] = 1 / difference
    others = [j for j in range(8) if j != 3]
    exact[:, others] -= ((u[:, others].sum(-1) + 1 / difference) / 7)[:, None]
    condition = torch.linalg.cond(constraint.G).item()
    assert (out - exact).abs().max() <= condition * 2.3e-16 * exact.abs().max()


@pytest.mark.parametrize("difference", [1e-9, 1e-11])
@pytest.mark.parametrize("kind, projection", NEARLY_DEPENDENT_PATHS)
def test_rows_too_nearly_dependent_to_meet_in_float64_are_refused(kind, projection, difference):
    """With ``δ = 1e-9`` the exact answer reaches ``1/δ = 1e9``: float64 values of that size sum
    to the first row's target 0 only to ``eps/δ ≈ 2e-7``, far above the round-off of the data
    (fields and targets of size 1). A check judged against the result's own size passed them
    all; the update is refused, naming ``G``'s condition number."""
    constraint, _, output = nearly_dependent(kind, projection, difference)
    condition = np.linalg.cond(constraint.G.numpy())
    with pytest.raises(ConstraintError, match=re.escape(f"condition number {condition:.3g}")):
        constraint(output)


def two_nearly_equal_rows(difference):
    """``u₀ + u₁ = 1`` and ``u₀ + (1 + δ) u₁ = 1.5`` on 3 points: ``u₁ ≈ 0.5/δ``."""
    G = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0 + difference, 0.0]], dtype=F64)
    return G, torch.tensor([1.0, 1.5], dtype=F64)


@pytest.mark.parametrize("difference", [1e-9, 1e-13])
@pytest.mark.parametrize(
    "field",
    [
        lambda: torch.zeros(3, dtype=F64),
        lambda: torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0)),
        lambda: torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),
    ],
    ids=["zero", "float64", "float32"],
)
@pytest.mark.parametrize(
    "path",
    [
        lambda G, b, u: constrain(nn.Identity(), LinearConstraint(G, b))(u),
        lambda G, b, u: LinearConstraint(G, b, projection="euclidean")(
            Gaussian(u, torch.ones_like(u))
        ),
        lambda G, b, u: LinearConstraint(G, b)(Gaussian(u, torch.ones_like(u))),
        lambda G, b, u: LinearConstraint(G, b)(
            Gaussian(u, torch.eye(3, dtype=u.dtype).expand(*u.shape, 3))
        ),
        lambda G, b, u: LinearConstraint(G, b, projection="euclidean")(
            Ensemble(torch.stack([u, u + 0.5, u - 0.25]))
        ),
    ],
    ids=["tensor", "gaussian-euclidean", "gaussian-diagonal", "gaussian-full", "ensemble-hardc"],
)
def test_a_constraint_whose_answer_float64_cannot_hold_raises_on_every_path(
    path, field, difference
):
    """Two rows ``δ`` apart asking for different totals: the answer reaches ``0.5/δ``, whose
    float64 values meet ``u₀ + u₁ = 1`` only to ``eps · 0.5/δ`` (1e-7 at ``δ = 1e-9``; a float32
    result misses it by 1 or more). Refused, naming ``G``'s condition number, whether the field
    starts at zero (whose computed residual rounds to exactly 0), in float64 or in float32, and
    whether it is a tensor, a Gaussian's mean (HardC, or ProbConserv with a diagonal or a full
    covariance) or an ensemble's members."""
    G, b = two_nearly_equal_rows(difference)
    condition = np.linalg.cond(G.numpy())
    with pytest.raises(ConstraintError, match=re.escape(f"condition number {condition:.3g}")):
        path(G, b, field())


def test_a_zero_field_meets_a_large_target():
    """A zero field and a total of 1e12: the projection ``w M / |w|²`` is a field 1e12 times
    the data's field, yet exact to round-off (one well-conditioned row): not refused."""
    w = GRID.weights()
    out = mass_conservation(GRID, torch.tensor(1e12, dtype=F64))(torch.zeros(33, dtype=F64))
    expected = w.numpy() * 1e12 / (w.numpy() @ w.numpy())
    assert np.abs(out.numpy() - expected).max() <= 4e-16 * expected.max()


@pytest.mark.parametrize("scale", [1.0, 1e-12])
def test_rows_of_small_weights_move_a_field_far_to_their_targets(scale):
    """Mass and first moment on 2049 points (weights ``dx ≈ 5e-4``), scaled by ``scale``, targets
    ``scale · (1e3, 3e2)``, fields of size 1: the field moves to ~1e3, a thousand times its own
    size. Scaling rows and targets together changes nothing: both are the normal equations'
    answer (well-conditioned rows) to round-off."""
    grid = Grid1D(2049)
    w, x = grid.weights(), grid.coordinates()
    G = scale * torch.stack([w, w * x])
    b = scale * torch.tensor([1e3, 3e2], dtype=F64)
    u = torch.randn(2, 2049, dtype=F64, generator=torch.Generator().manual_seed(5))
    out = LinearConstraint(G, b)(u).numpy()
    expected = np.stack([euclidean(v, G.numpy() / scale, b.numpy() / scale) for v in u.numpy()])
    assert np.abs(out - expected).max() <= 1e-13 * np.abs(expected).max()


def test_many_rows_move_a_zero_field_to_large_targets():
    """40 orthogonal rows of sizes 1 to 3 on 64 points (condition number 3), targets up to 1e6,
    a zero field: the minimum-norm solution, to round-off."""
    Q = torch.linalg.qr(torch.randn(64, 40, dtype=F64, generator=torch.Generator().manual_seed(7)))
    G = Q[0].T * torch.linspace(1, 3, 40, dtype=F64)[:, None]
    b = torch.linspace(-1e6, 1e6, 40, dtype=F64)
    out = LinearConstraint(G, b)(torch.zeros(64, dtype=F64)).numpy()
    expected = euclidean(np.zeros(64), G.numpy(), b.numpy())
    assert np.abs(out - expected).max() <= 1e-14 * np.abs(expected).max()


def test_a_large_total_after_dirichlet_walls_is_met_keeping_the_walls():
    """Walls at 0, then a total of 1e9 on a zero field: the walls stay 0 and the interior takes
    ``w_j M / Σ_interior w²``, the projection keeping the walls' rows (closed form)."""
    w = GRID.weights()
    walls = BoundaryCondition(Dirichlet(0.0, 0.0), GRID)
    mass = mass_conservation(GRID, torch.tensor(1e9, dtype=F64))
    out = constrain(nn.Identity(), walls, mass)(torch.zeros(2, 33, dtype=F64)).numpy()
    interior = w.numpy()[1:-1]
    assert (out[:, [0, -1]] == 0).all()
    expected = interior * 1e9 / (interior @ interior)
    assert np.abs(out[:, 1:-1] - expected).max() <= 4e-16 * expected.max()


SQUARE_SYSTEMS = [(1088, 5), (16, 11), (250, 11)]  # condition numbers 3e3, 4e4, 2e4


def square_system(seed, n):
    """``n`` random rows ``G`` on ``n`` points, targets ``b``, a mean and a full covariance (the
    recipe of test_constraints.random_problem), and the generator, to draw more from."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    cov = A @ A.T / n + 0.05 * torch.eye(n, dtype=F64)
    mean = torch.randn(n, generator=gen, dtype=F64)
    G = torch.randn(n, n, generator=gen, dtype=F64)
    b = torch.randn(n, generator=gen, dtype=F64)
    return G, b, mean, cov, gen


def assert_square_system_met(out, G, b, before):
    """Every field of ``out`` ``(..., n)`` is ``G⁻¹ b`` to ``cond(G) eps``, and meets the rows to
    the round-off of its data ``before`` (each slice its own)."""
    Gn, bn = G.numpy(), b.numpy()
    data = np.abs(Gn).sum(1).max() * np.abs(before.numpy()).max(-1) + np.abs(bn).max()
    assert (np.abs(out @ Gn.T - bn).max(-1) <= 1e-12 * data).all()
    solution = np.linalg.solve(Gn, bn)
    assert np.abs(out - solution).max() <= np.linalg.cond(Gn) * 1e-15 * np.abs(solution).max()


@pytest.mark.parametrize("seed, n", SQUARE_SYSTEMS)
def test_a_full_covariance_update_of_a_square_system_meets_it_to_the_data_round_off(seed, n):
    """``n`` random rows on ``n`` points (condition numbers 3e3 to 4e4) and a full covariance:
    the posterior mean with ``σ = 0`` is the one field meeting them, ``G⁻¹ b``, hundreds of times
    the data's size. The solve with ``G Σ Gᵀ`` (condition number up to 1e10) left the rows missed
    by 4e-9 to 1e-7 of the data's scale; refined once, the residual is at round-off."""
    G, b, mean, cov, _ = square_system(seed, n)
    out = LinearConstraint(G, b)(Gaussian(mean, cov)).mean.numpy()
    assert_square_system_met(out, G, b, mean)


@pytest.mark.parametrize("seed, n", SQUARE_SYSTEMS)
def test_an_ensemble_update_of_a_square_system_meets_it_to_the_data_round_off(seed, n):
    """The same square systems, and 60 members drawn around the mean with that covariance: every
    member moves to ``G⁻¹ b``, the one field meeting the rows. The gain's solve with ``G Σ Gᵀ``
    (the members' ``Σ``) alone missed the rows by 3e-9 to 7e-8 of the data, and the update was
    refused; refined once, as the Gaussian's mean, every member meets them to round-off."""
    G, b, mean, cov, gen = square_system(seed, n)
    X = mean + torch.randn(60, n, generator=gen, dtype=F64) @ torch.linalg.cholesky(cov).T
    out = LinearConstraint(G, b)(Ensemble(X)).samples.numpy()
    assert_square_system_met(out, G, b, X)


def ill_conditioned_rows(seed: int, n: int, k: int, condition: float):
    """``k`` orthonormal directions on ``n`` points mixed by a random rotation and scaled so that
    ``G`` ``(k, n)`` has singular values from 1 down to ``1 / condition``, and the generator, to
    draw more from."""
    gen = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=F64))[0]
    V = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=F64))[0]
    G = (V * torch.logspace(0, -math.log10(condition), k, dtype=F64)) @ U.T
    return G, gen


@pytest.mark.parametrize("seed", [14, 30])
def test_few_members_meet_rows_of_condition_1e5_to_the_data_round_off(seed):
    """3 members on 32 points and 4 rows of condition number 1e5: the members cannot span the
    rows, so ``γ I`` joins their covariance, and ``G Σ Gᵀ`` has condition number ~1e10. Every
    member moves ~1e5 away to meet the rows (the tensor projection meets the same ``G``); a
    single refinement of the solve left them missed by 1e-7 of the data's scale and the update
    was refused. Refined while the residual is above the data's round-off, every member meets
    the rows within the residual tolerance of its own data."""
    G, gen = ill_conditioned_rows(seed, 32, 4, 1e5)
    assert np.linalg.cond(G.numpy()) == pytest.approx(1e5, rel=1e-6)
    X = 1.0 + torch.randn(3, 32, generator=gen, dtype=F64)
    b = torch.randn(4, generator=gen, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer members than rows: the γ fallback's warning
        out = LinearConstraint(G, b)(Ensemble(X)).samples.numpy()
    Gn, bn = G.numpy(), b.numpy()
    data = np.abs(Gn).sum(1).max() * np.abs(X.numpy()).max(-1) + np.abs(bn).max()
    assert (np.abs(out @ Gn.T - bn).max(-1) <= linear.RESIDUAL_TOLERANCE * data).all()
    assert np.abs(out).max() > 1e3 * np.abs(X.numpy()).max()  # the rows are met far away


def ensemble_update_50_digits(X: np.ndarray, G: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every member ``x`` of ``X`` ``(member, n)`` moved to ``x − A (GA)ᵀ [(GA)(GA)ᵀ]⁻¹ (G x −
    b)``, ``A`` the centred members ``(n, member)`` (the members' own covariance, ``σ = 0``), in
    50-digit arithmetic from the float64 data."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    members = mpmath.matrix(X.tolist()).T
    m = X.shape[0]
    mean = [mpmath.fsum(members[i, j] for j in range(m)) / m for i in range(members.rows)]
    A = mpmath.matrix([[members[i, j] - mean[i] for j in range(m)] for i in range(members.rows)])
    Gm, bm = mpmath.matrix(G.tolist()), mpmath.matrix(b.tolist())
    GA = Gm * A
    S = GA * GA.T
    moved = [
        members[:, j] - A * (GA.T * mpmath.lu_solve(S, Gm * members[:, j] - bm)) for j in range(m)
    ]
    return np.array([[float(v) for v in x] for x in moved])


@pytest.mark.parametrize("spread, seed", [(1e-4, 5), (1e-5, 0), (5e-6, 3)])
def test_members_that_span_the_rows_get_their_own_update_however_far_it_moves_them(spread, seed):
    """8 members on 16 points and 3 random rows, their spread along the third row (beyond what
    the first two fix) shrunk to ``spread`` of the rest: the pivot test finds them spanning the
    rows (the spread's square is above ``UNSPANNED``), so each member moves by the ensemble's own
    gain, ``Σ Gᵀ (G Σ Gᵀ)⁻¹``, to values of 2e4 to 4e5 (the members' are a few units: the rows
    are met moving along the members' other directions), and meets the rows to the data's
    round-off. A stricter residual check had refused that update and silently put the ``γ I``
    fallback's small correction in its place. The gain's solve has condition number ``cond(G Σ
    Gᵀ)``: the answer is the 50-digit one to that times ``eps``."""
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(3, 16, generator=gen, dtype=F64)
    A = torch.randn(8, 16, generator=gen, dtype=F64)
    q = torch.linalg.qr(G.T)[0][:, 2]  # the third row's direction beyond the first two
    X = 1.0 + A - (1 - spread) * (A @ q)[:, None] * q
    b = 3 * torch.randn(3, generator=gen, dtype=F64)
    out = LinearConstraint(G, b)(Ensemble(X)).samples.numpy()
    exact = ensemble_update_50_digits(X.numpy(), G.numpy(), b.numpy())
    centred = X.numpy() - X.numpy().mean(0)
    condition = np.linalg.cond(G.numpy() @ centred.T @ centred @ G.numpy().T)
    assert np.abs(out - exact).max() <= condition * 2.3e-16 * np.abs(exact).max()
    data = np.abs(G.numpy()).sum(1).max() * np.abs(X.numpy()).max(-1) + np.abs(b.numpy()).max()
    assert (np.abs(out @ G.numpy().T - b.numpy()).max(-1) <= 1e-9 * data).all()


ZERO_FIELD_PATHS = {
    "tensor": lambda G, b: LinearConstraint(G, b)(torch.zeros(8, dtype=F64)),
    "gaussian-euclidean": lambda G, b: (
        LinearConstraint(G, b, projection="euclidean")(
            Gaussian(torch.zeros(8, dtype=F64), torch.ones(8, dtype=F64))
        ).mean
    ),
    "gaussian-diagonal": lambda G, b: (
        LinearConstraint(G, b)(Gaussian(torch.zeros(8, dtype=F64), torch.ones(8, dtype=F64))).mean
    ),
    "gaussian-full": lambda G, b: (
        LinearConstraint(G, b)(Gaussian(torch.zeros(8, dtype=F64), torch.eye(8, dtype=F64))).mean
    ),
    "ensemble-hardc": lambda G, b: (
        LinearConstraint(G, b, projection="euclidean")(
            Ensemble(torch.zeros(3, 8, dtype=F64))
        ).samples
    ),
}


@pytest.mark.parametrize(
    "total, point, target",
    [(1.0, 1e-8, 1.0), (1.0, 1.0, 1e8), (1e8, 1.0, 1.0), (1e7, 1.0, 1.0)],
    ids=["small-point-row", "same-rows-scaled", "large-total-row", "total-row-1e7"],
)
@pytest.mark.parametrize("path", ZERO_FIELD_PATHS.values(), ids=ZERO_FIELD_PATHS.keys())
def test_rows_of_different_scales_are_judged_as_the_same_constraint_scaled(
    path, total, point, target
):
    """``total · Σ u = 0`` and ``point · u₀ = target`` on a zero field of 8 points: ``u₀ =
    target / point``, the others ``−u₀ / 7``, whatever the rows' scales. A point row of weight
    1e-8 (the answer 1e8, on which the sum row's round-off is ~1e-8) and a sum row of weights 1e7
    or 1e8 (its round-off ~1e-8 on an answer of 1) were refused: that round-off was judged
    against targets of 1 and a zero field, not against the row's own scale. Judged with each row
    scaled to ``Σ_j |G_ij| = 1``, as the same constraint written with unit rows (which passed),
    every path returns the answer to the round-off of that well-conditioned pair."""
    G = torch.zeros(2, 8, dtype=F64)
    G[0], G[1, 0] = total, point
    out = path(G, torch.tensor([0.0, target], dtype=F64)).numpy()
    exact = np.full(8, -target / point / 7)
    exact[0] = target / point
    scaled = np.vstack([np.ones(8), np.eye(8)[0]])
    assert np.abs(out - exact).max() <= np.linalg.cond(scaled) * 2.3e-16 * np.abs(exact).max()


BATCHED_PATHS = {
    "tensor": (lambda G, b, u: LinearConstraint(G, b)(u), "leading index (1,)"),
    "gaussian-diagonal": (
        lambda G, b, u: LinearConstraint(G, b)(Gaussian(u, torch.ones_like(u))),
        "leading index (1,)",
    ),
    "ensemble-hardc": (
        lambda G, b, u: LinearConstraint(G, b, projection="euclidean")(
            Ensemble(torch.stack([u, u]))
        ),
        "member 0, slice (1,)",
    ),
}


@pytest.mark.parametrize("path, index", BATCHED_PATHS.values(), ids=BATCHED_PATHS.keys())
def test_a_slice_the_check_refuses_alone_is_refused_beside_a_slice_of_large_targets(path, index):
    """Two nearly equal rows (``δ = 1e-9``) asking for totals 1 and 1.5 in slice 1 (the answer
    ``0.5/δ``, refused alone) beside slice 0 asking for 1e6 from both (its answer meets them
    exactly). Each slice is judged on its own data: slice 1 is refused, named, as alone; judged
    on the batch's largest target it passed, missing its first row by 1e-7 (by 1 once in
    float32)."""
    G, b = two_nearly_equal_rows(1e-9)
    condition = re.escape(f"condition number {np.linalg.cond(G.numpy()):.3g}")
    with pytest.raises(ConstraintError, match=condition):
        path(G, b, torch.zeros(3, dtype=F64))
    batch = torch.stack([torch.tensor([1e6, 1e6], dtype=F64), b])
    with pytest.raises(ConstraintError, match=re.escape(f"at {index} ") + ".*" + condition):
        path(G, batch, torch.zeros(2, 3, dtype=F64))


def test_an_ensemble_refused_names_the_member_and_the_slice_apart():
    """Members ``(member, 1, 2, n)``: slice ``(0, 1)`` asks two nearly equal rows for totals 1
    and 1.5 (the answer ``0.5/δ``, beyond float64's reach on a zero field), slice ``(0, 0)`` for
    1e6 from both. Member 0 holds values of 1e9, on whose scale the answer is met; member 1 is
    zero there and misses it: the error names member 1 and slice (0, 1), not a leading index
    whose first number is the member."""
    G, b = two_nearly_equal_rows(1e-9)
    targets = torch.stack([torch.tensor([1e6, 1e6], dtype=F64), b])[None]  # (1, 2, 2)
    samples = torch.zeros(2, 1, 2, 3, dtype=F64)
    samples[0] = 1e9
    with pytest.raises(ConstraintError, match=re.escape("at member 1, slice (0, 1) (")):
        LinearConstraint(G, targets, projection="euclidean")(Ensemble(samples))
    with pytest.raises(ConstraintError, match=re.escape("at member 1 (")):
        LinearConstraint(G, b, projection="euclidean")(Ensemble(samples[:, 0, 1]))


def test_slices_far_apart_in_size_are_each_projected_to_their_exact_answer():
    """Fields and targets of sizes 1e-6 and 1e6 in one batch, well-conditioned rows: each slice
    meets its rows to its own round-off, and is its own Euclidean projection."""
    G = torch.linalg.qr(torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(1)))
    G = G[0].T * torch.tensor([1.0, 2.0, 3.0], dtype=F64)[:, None]
    sizes = torch.tensor([1e-6, 1e6], dtype=F64)[:, None]
    u = sizes * torch.randn(2, 20, dtype=F64, generator=torch.Generator().manual_seed(2))
    b = sizes * torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    out = LinearConstraint(G, b)(u).numpy()
    for i in range(2):
        expected = euclidean(u[i].numpy(), G.numpy(), b[i].numpy())
        assert np.abs(out[i] - expected).max() <= 1e-15 * np.abs(expected).max()


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_a_diagonal_gaussian_update_matches_the_dense_formula(noise):
    """Three rows, variances from 0.1 to 2: mean and covariance as the textbook formula."""
    G = torch.randn(3, 12, dtype=F64, generator=torch.Generator().manual_seed(4))
    mean, variance = torch.linspace(-1, 1, 12, dtype=F64), torch.linspace(0.1, 2, 12, dtype=F64)
    b = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    out = LinearConstraint(G, b, noise=noise)(Gaussian(mean, variance))
    D, Gn = np.diag(variance.numpy()), G.numpy()
    gain = D @ Gn.T @ np.linalg.inv(Gn @ D @ Gn.T + noise**2 * np.eye(3))
    assert (
        np.abs(out.mean.numpy() - (mean.numpy() - gain @ (Gn @ mean.numpy() - b.numpy()))).max()
        <= 1e-13
    )
    assert np.abs(out.dense_cov().numpy() - (D - gain @ Gn @ D)).max() <= 1e-13


@pytest.mark.parametrize("scale", [3e-13, 1e-13])
def test_a_diagonal_gaussian_update_judges_each_row_on_its_own_scale(scale):
    """Rows ``w`` and ``scale · w (x − ½)`` (target 0): scaling a row changes neither the
    constraint nor the update, so mean and covariance are the dense formula's for the unscaled
    pair (well conditioned); the small row was refused as not positive definite."""
    w, x = GRID.weights(), GRID.coordinates()
    moment = w * (x - 0.5)
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 33, dtype=F64, generator=generator)
    variance = 0.5 + torch.rand(3, 33, dtype=F64, generator=generator)
    b = torch.tensor([1.0, 0.0], dtype=F64)
    out = LinearConstraint(torch.stack([w, scale * moment]), b)(Gaussian(mean, variance))
    G = torch.stack([w, moment]).numpy()
    for i in range(3):
        D = np.diag(variance[i].numpy())
        gain = D @ G.T @ np.linalg.inv(G @ D @ G.T)
        expected = mean[i].numpy() - gain @ (G @ mean[i].numpy() - b.numpy())
        assert np.abs(out.mean[i].numpy() - expected).max() <= 1e-13
        assert np.abs(out.dense_cov()[i].numpy() - (D - gain @ G @ D)).max() <= 1e-13


def test_well_conditioned_rows_are_projected_to_round_off():
    G = torch.linalg.qr(torch.randn(40, 5, dtype=F64, generator=torch.Generator().manual_seed(3)))
    G = G[0].T * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=F64)[:, None]  # condition 6
    u, b = torch.linspace(-1, 1, 40, dtype=F64), torch.arange(5, dtype=F64)
    out = LinearConstraint(G, b)(u)
    assert np.abs(out.numpy() - euclidean(u.numpy(), G.numpy(), b.numpy())).max() <= 1e-15


@pytest.mark.parametrize("seed", range(8))
def test_rows_made_dependent_after_construction_are_refused_naming_the_conditioning(seed):
    G = torch.randn(2, 6, dtype=F64, generator=torch.Generator().manual_seed(seed))
    constraint = LinearConstraint(G, torch.zeros(2, dtype=F64))
    constraint.G.data[1] = 3 * constraint.G.data[0]  # a write the constructor's check never saw
    refused = r"G's 2 rows are linearly dependent \(rank 1, condition number"
    with pytest.raises(ConstraintError, match=refused):
        constraint(torch.ones(6, dtype=F64))


# ------------------------------------------------------------------------- rounded totals


def bisection_projection(x: np.ndarray, w: np.ndarray, total: float) -> np.ndarray:
    """``max(x − λ w, 0)`` with ``w·u = total``, ``λ`` by bisection (``total > 0``)."""
    low, high = -1e3, 1e3
    for _ in range(3000):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if np.maximum(x - middle * w, 0) @ w > total else (low, middle)
    return np.maximum(x - 0.5 * (low + high) * w, 0)


def assert_projected_onto_the_target(out: np.ndarray, rounded: np.ndarray, total: float) -> None:
    """``out`` ``(..., n)`` is non-negative, meets ``total`` and is the projection of the fields
    ``rounded`` onto it (each to 1e-6 of its scale, beyond float64's round-off on fields of size
    1), by bisection."""
    w = GRID.weights().numpy()
    round_off = 1e-15 * np.abs(rounded).max()
    assert out.min() >= 0
    assert np.abs(out @ w - total).max() <= 1e-6 * total + round_off
    expected = np.stack([bisection_projection(r, w, total) for r in rounded.reshape(-1, w.size)])
    assert np.abs(out.reshape(expected.shape) - expected).max() <= (
        1e-6 * np.abs(expected).max() + round_off
    )


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("as_function", [False, True])
@pytest.mark.parametrize("target", [1e-9, 1e-12])
def test_a_float32_field_keeps_the_target_not_its_rounded_total(target, as_function, noise):
    """Mass then non-negativity on float32: the mass step's output, rounded to float32, misses a
    small target by ~1e-8 (below zero for some samples); ``keep``'s target is kept instead
    (given as a tensor, or as a function of the inputs; a tensor is projected onto it exactly
    whatever the noise)."""
    u = torch.randn(20, 33, generator=torch.Generator().manual_seed(0))
    total = torch.full((20,), target, dtype=F64)
    mass = mass_conservation(GRID, (lambda x: total) if as_function else total, noise=noise)
    rounded = constrain(nn.Identity(), mass)(u).double().numpy()
    out = constrain(nn.Identity(), mass, NonNegative(keep=mass))(u).double().numpy()
    assert_projected_onto_the_target(out, rounded, target)


@pytest.mark.parametrize("target", [1e-9, 1e-12])
def test_a_float32_ensemble_projected_with_noise_keeps_the_target_not_its_rounded_total(target):
    """As for a tensor, with the members of an ensemble: HardC (``projection="euclidean"``)
    meets the target exactly whatever the noise, so NonNegative keeps the target, not the
    float32-rounded totals of the members."""
    u = torch.randn(3, 10, 33, generator=torch.Generator().manual_seed(0))
    total = torch.full((10,), target, dtype=F64)
    mass = mass_conservation(GRID, total, noise=0.1, projection="euclidean")
    rounded = constrain(nn.Identity(), mass)(Ensemble(u)).samples.double().numpy()
    out = constrain(nn.Identity(), mass, NonNegative(keep=mass))(Ensemble(u)).samples
    assert_projected_onto_the_target(out.double().numpy(), rounded, target)


def test_a_total_far_from_keeps_target_is_kept_as_it_is():
    """``keep`` names the row; a field that never met its target keeps its own total."""
    w = GRID.weights()
    u = torch.sin(2 * torch.pi * GRID.coordinates()) + 0.2  # total 0.2, target 1
    out = NonNegative(keep=mass_conservation(GRID, torch.tensor(1.0, dtype=F64)))(u)
    assert out.min() >= 0 and abs((out @ w).item() - (u @ w).item()) <= 1e-15


def test_a_float32_total_below_zero_only_by_its_rounding_is_made_the_zero_field():
    """An odd float32 field (total 0) with one value an ulp lower: its total is -4.7e-10, far
    from ``keep``'s target 1, so it keeps its own total, zero at float32's precision. The only
    non-negative field of total 0 (the weights all positive) is 0 everywhere, not an error."""
    half = torch.sin(2 * torch.pi * GRID.coordinates()[1:16]).float()
    u = torch.zeros(33)
    u[1:16], u[17:32] = half, -half.flip(0)
    u[1] = torch.nextafter(u[1], torch.tensor(-1.0))
    assert -1e-9 < (u.double() @ GRID.weights()).item() < 0
    out = NonNegative(keep=mass_conservation(GRID, torch.tensor(1.0, dtype=F64)))(u)
    assert out.dtype == torch.float32 and bool((out == 0).all())


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_a_bfloat16_ensemble_keeps_totals_beyond_the_rounding_of_its_values(noise):
    """bfloat16 members (eps 2⁻⁷) with totals ``1 + 0.02 t``, ``t`` from -1 to 1: keep's target 1
    differs from most by more than their values' rounding (``eps / 2`` of ``Σ w |x|``), and with
    noise 1 its update leaves them so on purpose. Each member keeps its own total, to the rounding
    of the result; a band of ``4 eps`` (3%) moved them all to 1."""
    w, x = GRID.weights(), GRID.coordinates()
    t = torch.linspace(-1, 1, 8, dtype=F64)[:, None]
    waves = torch.cos(2 * torch.pi * torch.arange(1, 9, dtype=F64)[:, None] * x)  # total 0
    X = ((1 + 0.02 * t) * (1 + 1.5 * torch.sin(2 * torch.pi * x)) + 0.1 * waves).bfloat16()
    mass = mass_conservation(GRID, torch.tensor(1.0, dtype=F64), noise=noise)
    before = (mass(Ensemble(X)).samples if noise else X).double()
    constraints = (mass, NonNegative(keep=mass)) if noise else (NonNegative(keep=mass),)
    after = constrain(nn.Identity(), *constraints)(Ensemble(X)).samples.double()
    assert (before < 0).any() and after.min() >= 0
    rounding = torch.finfo(torch.bfloat16).eps / 2 * (after.abs() @ w) + 1e-12
    assert ((after @ w - before @ w).abs() <= rounding).all()
    assert (before @ w - 1).abs().max() > 4 * rounding.max()


def test_keeps_target_function_is_called_only_to_project_a_negative_field():
    """The mass step calls its target function once a forward; NonNegative only when a tensor
    or an ensemble has a negative value (a Gaussian never needs it)."""
    calls = []

    def target(value: float):
        def total(*inputs):
            calls.append(value)
            return torch.full((20,), value, dtype=F64)

        return total

    u = torch.rand(20, 33, dtype=F64, generator=torch.Generator().manual_seed(0))
    positive, small = mass_conservation(GRID, target(1.0)), mass_conservation(GRID, target(1e-9))
    constrain(nn.Identity(), positive, NonNegative(keep=positive))(u)
    assert calls == [1.0]
    gaussian = Gaussian(u - 0.5, torch.full_like(u, 0.1))
    constrain(nn.Identity(), small, NonNegative(keep=small))(gaussian)
    assert calls == [1.0, 1e-9]
    constrain(nn.Identity(), small, NonNegative(keep=small))(u - 0.5)
    assert calls == [1.0, 1e-9, 1e-9, 1e-9]


def test_a_float32_gaussian_whose_total_rounds_below_zero_is_made_non_negative():
    """ProbConserv toward a total of 1e-9, the mean stored in float32: some totals round to
    -1e-8, zero at float32's precision; the mean becomes non-negative with totals ``max(t, 0)``."""
    w = GRID.weights().double()
    mean = torch.randn(50, 33, generator=torch.Generator().manual_seed(0))
    mass = mass_conservation(GRID, torch.full((50,), 1e-9, dtype=F64))
    before = mass(Gaussian(mean, torch.full((50, 33), 0.1))).mean.double()
    out = constrain(nn.Identity(), mass, NonNegative())(Gaussian(mean, torch.full((50, 33), 0.1)))
    after = out.mean.double()
    assert after.min() >= 0 and (before @ w).min() < 0
    rounding = 4 * torch.finfo(torch.float32).eps * (before.abs() @ w)
    assert ((after @ w - (before @ w).clamp_min(0)).abs() <= rounding).all()


# ------------------------------------------------------------------------- rank-deficient cov


@pytest.mark.parametrize("check_psd", [False, True])
def test_a_rank_deficient_covariance_refused_suggests_a_jitter_that_works(check_psd):
    """``d dᵀ`` with ``d`` nearly mass-free: positive semi-definite, but conditioning on the mass
    amplifies its round-off to a negative variance. The message names the jitter, which works.
    (A mass of 1e-6 reaches -7e-4 × the largest prior variance; 1e-4's round-off, luck, stays
    within tolerance since the update averages ``cov Gᵀ`` and ``(G cov)ᵀ``.)"""
    w, x = GRID.weights(), GRID.coordinates()
    v = torch.sin(2 * torch.pi * x)
    d = v - (v @ w) / (w @ w) * w + 1e-6 * w
    cov = torch.outer(d, d)
    mass = mass_conservation(GRID, torch.tensor(1.0, dtype=F64))
    mass.check_psd = check_psd
    with pytest.raises(ConstraintError, match=r"add a small jitter.*1e-12 \* trace\(cov\) / n"):
        mass(Gaussian(torch.ones(33, dtype=F64), cov))
    jittered = cov + 1e-12 * cov.trace() / 33 * torch.eye(33, dtype=F64)
    assert mass(Gaussian(torch.ones(33, dtype=F64), jittered)).variance().min() >= 0


# ------------------------------------------------------------------------- 16-bit outputs


@pytest.mark.parametrize("wrap", [lambda u: u, Ensemble, lambda u: Gaussian(u, torch.ones_like(u))])
def test_a_float16_result_that_overflows_is_refused_naming_the_dtype(wrap):
    u = (40000.0 * torch.tensor([[0.9], [1.0], [1.1]]) * torch.ones(33)).to(torch.float16)
    mass = mass_conservation(GRID, torch.tensor(70000.0, dtype=F64))  # values of 7e4 > 65504
    with pytest.raises(ConstraintError, match=r"does not fit torch\.float16.*overflows to inf"):
        mass(wrap(u))


@pytest.mark.parametrize(
    "wrap",
    [lambda u: u, lambda u: u[1], Ensemble, lambda u: Gaussian(u, torch.ones_like(u))],
    ids=["tensor", "one-field", "ensemble", "gaussian"],
)
def test_a_float16_result_below_its_precision_is_refused(wrap):
    """Values of 1e-6 are subnormal in float16 (spacing 6e-8): the exact update's field, rounded
    back to float16, misses the target by 0.1%, beyond float16's round-off, whether it is a
    batch of tensors, a single field ``(x,)``, an ensemble's members or a Gaussian's mean."""
    u = (1e-6 * torch.tensor([[0.9], [1.0], [1.1]]) * torch.ones(33)).to(torch.float16)
    mass = mass_conservation(GRID, torch.tensor(3e-6, dtype=F64))
    with pytest.raises(ConstraintError, match=r"rounded to torch\.float16.*smallest normal"):
        mass(wrap(u))


def test_a_float16_slice_below_its_precision_is_refused_beside_a_larger_slice():
    """``Σ u = 1e-6`` on 8 points of 3e-7: the answer 1.25e-7 each is subnormal in float16
    (spacing 6e-8), so the rounded field misses that total by several percent and is refused.
    Beside a slice of ones asked for a total of 8 (met exactly in float16) it is refused too:
    each slice is judged on its own values and target, not on the batch's largest."""
    G = torch.ones(1, 8, dtype=F64)
    small = torch.full((8,), 3e-7, dtype=torch.float16)
    rounded = torch.tensor(1e-6 / 8).half().double().item()  # the answer in float16
    scale = 8 * 1e-6 / 8 + 1e-6  # max_i Σ_j |G_ij| · max|u| + |b|
    assert abs(8 * rounded - 1e-6) / scale > 10 * torch.finfo(torch.float16).eps
    match = r"rounded to torch\.float16.*smallest normal"
    with pytest.raises(ConstraintError, match=match):
        LinearConstraint(G, torch.tensor([[1e-6]], dtype=F64))(small[None])
    batch = torch.stack([torch.ones(8, dtype=torch.float16), small])
    with pytest.raises(ConstraintError, match=match):
        LinearConstraint(G, torch.tensor([[8.0], [1e-6]], dtype=F64))(batch)


def float16_miss(answer: float, points: int, target: float, where: str) -> str:
    """The error of a float16 slice whose ``points`` values the exact update sets to
    ``answer`` each (the rows' total ``target``): each rounded to float16, the total missed by
    ``|points · half(answer) − target|`` of the scale ``answer · points + target``."""
    rounded = torch.tensor(answer, dtype=F64).half().double().item()
    relative = abs(points * rounded - target) / (answer * points + target)
    return (
        f"rounded to torch.float16, the constrained field misses G u = b by {relative:.3g} of "
        f"its scale{where}, beyond the dtype's round-off 0.000977: its values (largest "
        f"{answer:.3g}) lose their precision below 6.1e-05, its smallest normal number; compute "
        "it in float32 or rescale the field"
    )


def test_a_float16_miss_names_the_one_slice_below_its_precision():
    """A batch ``(2, 3, 8)`` of ones asked for totals of 8 (met exactly in float16) but for
    slice ``(1, 2)``: 3e-7 asked for 1e-6, whose answer 1.25e-7 is subnormal in float16. Only
    that slice misses, and the error names it as the residual check names a slice."""
    G = torch.ones(1, 8, dtype=F64)
    batch = torch.ones(2, 3, 8, dtype=torch.float16)
    batch[1, 2] = 3e-7
    b = torch.full((2, 3, 1), 8.0, dtype=F64)
    b[1, 2] = 1e-6
    with pytest.raises(ConstraintError) as refusal:
        LinearConstraint(G, b)(batch)
    assert str(refusal.value) == float16_miss(1.25e-7, 8, 1e-6, " at leading index (1, 2)")


def test_a_float16_ensemble_miss_names_the_member_and_slice_below_its_precision():
    """Members ``(3, 2, 8)`` projected each on its own (the total of the first 4 points = b):
    slice 0 of ones asked for 4 (met exactly); in slice 1, 3e-7 on those points asked for 1e-6,
    whose answer 2.5e-7 is subnormal in float16. Members 0 and 1 hold a 1 at the last point,
    where the row does not reach: their slice's scale is 4, far above their miss; member 2 holds
    only the small values and misses. The error names member 2, slice (1,)."""
    G = torch.tensor([[1.0] * 4 + [0.0] * 4], dtype=F64)
    members = torch.zeros(3, 2, 8, dtype=torch.float16)
    members[:, 0, :4] = 1.0
    members[:, 1, :4] = 3e-7
    members[:2, 1, 7] = 1.0
    b = torch.tensor([[4.0], [1e-6]], dtype=F64)
    with pytest.raises(ConstraintError) as refusal:
        LinearConstraint(G, b, projection="euclidean")(Ensemble(members))
    assert str(refusal.value) == float16_miss(2.5e-7, 4, 1e-6, " at member 2, slice (1,)")


EMPTY_PATHS = {
    "tensor": lambda G, b, u: LinearConstraint(G, b)(u),
    "tensor-float16": lambda G, b, u: LinearConstraint(G, b)(u.half()),
    "gaussian-diagonal": lambda G, b, u: LinearConstraint(G, b)(Gaussian(u, torch.ones_like(u))),
    "gaussian-full": lambda G, b, u: LinearConstraint(G, b)(
        Gaussian(u, torch.eye(5, dtype=F64).expand(0, 5, 5))
    ),
    "gaussian-noisy": lambda G, b, u: LinearConstraint(G, b, noise=0.1)(
        Gaussian(u, torch.eye(5, dtype=F64).expand(0, 5, 5))
    ),
    "ensemble": lambda G, b, u: LinearConstraint(G, b)(Ensemble(torch.stack([u] * 4))),
    "ensemble-noisy": lambda G, b, u: LinearConstraint(G, b, noise=0.1)(
        Ensemble(torch.stack([u] * 4))
    ),
    "ensemble-hardc": lambda G, b, u: LinearConstraint(G, b, projection="euclidean")(
        Ensemble(torch.stack([u] * 4))
    ),
}


@pytest.mark.parametrize("path", EMPTY_PATHS.values(), ids=EMPTY_PATHS.keys())
def test_an_empty_batch_is_returned_empty(path):
    """A batch of no fields ``(0, n)``: nothing to constrain or check, returned as empty as it
    came (a reduction over it had raised torch's own error)."""
    G = torch.randn(2, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = path(G, torch.ones(2, dtype=F64), torch.zeros(0, 5, dtype=F64))
    if not isinstance(out, torch.Tensor):
        out = out.samples if isinstance(out, Ensemble) else out.mean
    assert out.numel() == 0 and out.shape[-2:] == (0, 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_results_within_their_precision_pass(dtype):
    w = GRID.weights()
    u = torch.linspace(0.5, 1.5, 33, dtype=F64)
    out = mass_conservation(GRID, torch.tensor(2.0, dtype=F64))(u.to(dtype))
    assert out.dtype == dtype
    assert abs((out.double() @ w).item() - 2.0) <= torch.finfo(dtype).eps * 2.0


@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("wall", [0.0, 0.3])
def test_a_noisy_update_with_points_every_member_shares_has_the_gradient_of_the_formula(rows, wall):
    """Where all members agree, the centred members are zero and the centre is their common
    value; their gradients must still be those of ``X − mean`` and of the mean, or the
    gradient of a noisy update with respect to each member is wrong there."""
    n, m = 7, 5
    w = torch.full((n,), 1.0 / (n - 1), dtype=F64)
    w[[0, -1]] /= 2
    G = torch.stack([w, w * torch.linspace(0, 1, n, dtype=F64)])[:rows]
    b = torch.tensor([1.0, 0.4], dtype=F64)[:rows]
    X = 1 + 0.3 * torch.randn(m, n, dtype=F64, generator=torch.Generator().manual_seed(0))
    X[:, [0, -1]] = wall
    constraint = LinearConstraint(G, b, noise=0.05)
    update = lambda members: constraint(Ensemble(members)).samples  # noqa: E731
    assert torch.autograd.gradcheck(update, (X.requires_grad_(True),), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("members", [3, 8])
def test_a_noisy_mass_update_leaves_walls_every_member_shares_exactly(members):
    """Dirichlet walls set first stay bit for bit under a noisy mass update (the members'
    mean of equal values may round an ulp off them)."""
    grid = Grid1D(10)
    samples = torch.rand(members, 2, 1, 10, generator=torch.Generator().manual_seed(3), dtype=F64)
    mass = mass_conservation(grid, torch.full((2, 1), 0.5, dtype=F64), noise=0.05)
    walls = BoundaryCondition(Dirichlet(0.1, 0.2), grid)
    out = constrain(nn.Identity(), walls, mass)(Ensemble(samples)).samples
    assert bool((out[..., 0] == 0.1).all()) and bool((out[..., -1] == 0.2).all())


def test_a_noisy_two_row_update_leaves_walls_every_member_shares_exactly():
    """The same for the update of several rows (mass and first moment): the mean of three
    members all 0.1 at a wall is 0.10000000000000002 in float64, yet the wall stays 0.1."""
    grid = Grid1D(10)
    w, x = grid.weights(), grid.coordinates()
    assert torch.full((3,), 0.1, dtype=F64).mean() != 0.1
    samples = torch.rand(3, 2, 10, generator=torch.Generator().manual_seed(3), dtype=F64)
    moments = LinearConstraint(
        torch.stack([w, w * x]), torch.tensor([0.5, 0.2], dtype=F64), noise=0.05
    )
    walls = BoundaryCondition(Dirichlet(0.1, 0.2), grid)
    out = constrain(nn.Identity(), walls, moments)(Ensemble(samples)).samples
    assert bool((out[..., 0] == 0.1).all()) and bool((out[..., -1] == 0.2).all())


@pytest.mark.parametrize("kind", ["tensor", "ensemble"])
def test_a_noisy_euclidean_projection_is_still_checked_for_its_residual(kind, monkeypatch):
    """A projection meets its rows exactly whatever the noise, so HardC with ``noise > 0`` is
    residual-checked too: a projector gone wrong (here 1.5 times the true one, so ``G u`` overshoots
    ``b`` by half the mismatch) is refused, not passed on silently."""
    true_projector = linear._projector
    monkeypatch.setattr(
        linear, "_projector", lambda G: (1.5 * true_projector(G)[0], true_projector(G)[1])
    )
    u = torch.randn(3, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    total = LinearConstraint(
        torch.ones(1, 8, dtype=F64),
        torch.tensor([1.0], dtype=F64),
        noise=0.1,
        projection="euclidean",
    )
    with pytest.raises(ConstraintError, match="the exact update left a relative residual"):
        total(u if kind == "tensor" else Ensemble(u))
