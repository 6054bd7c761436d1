"""An exact Gaussian process over ``(t, x)``, fitted per function on its context points.

The GP is the ProbConserv base model whose covariance is known exactly: its posterior covariance
within each time slice ``(T, X, X)`` is what the conservation update needs (one constraint row per
slice), and it is computed slice by slice without forming the ``(T·X)²`` joint matrix.

All algebra is float64 on the device of the context points. Inputs are rescaled to the unit box
and outputs standardised before the marginal likelihood is maximised; the learned
hyperparameters are reported in the original units, so a plain GP with those hyperparameters on
the raw data gives the same posterior.
"""

from __future__ import annotations

import math

import gpytorch
import torch
from linear_operator.utils.errors import NotPSDError
from torch import nn

from .._checks import as_tensor, choice, flag
from .._progress import progress_bar
from ..data.points import grid_points
from ..outputs import Gaussian

F64 = torch.float64
COVARIANCES = ("time-slices", "diagonal")
OPTIMIZERS = ("adam", "lbfgs")
_ALWAYS_CHOLESKY = 10**9


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood
    ) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2))

    def forward(self, z: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


class ExactGPSurrogate:
    """Exact GP ``u(t, x)``: constant mean, ARD RBF kernel (lengthscales for t and x) with an
    output scale, Gaussian noise no smaller than ``noise_floor`` (relative to the data variance).

    Args:
        iterations: optimiser steps on the negative log marginal likelihood (Adam), or the
            iteration budget of one L-BFGS run.
        lr: Adam's learning rate (L-BFGS uses a strong-Wolfe line search with step 1).
        optimizer: ``"adam"`` or ``"lbfgs"``.
        noise_floor: lower bound of the noise variance in standardised units (data variance 1).
        lengthscale: initial lengthscale of both inputs, in units of the context's extent.
        seed: seeds any random draw made while fitting (the Cholesky path used here makes none,
            so fits are reproducible run to run).

    :meth:`on_grid` gives the GP as an ``nn.Module`` that :func:`physml.constrain` wraps: the
    posterior on a fixed ``(t, x)`` grid of every function whose context it is called with.

    After :meth:`fit`: ``lengthscale_ (2,)`` (t, x; float64 on the CPU), ``outputscale_``,
    ``noise_``, ``mean_`` (all in the data's units), ``log_marginal_likelihood_`` and
    ``loss_curve_`` (the standardised negative log marginal likelihood per point, one entry per
    evaluation: per step with Adam, per function evaluation with L-BFGS, its line search
    included).
    """

    def __init__(
        self,
        iterations: int = 100,
        lr: float = 0.1,
        optimizer: str = "lbfgs",
        noise_floor: float = 1e-6,
        lengthscale: float = 0.3,
        seed: int = 0,
    ) -> None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        for name, value in (("lr", lr), ("noise_floor", noise_floor), ("lengthscale", lengthscale)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.iterations = iterations
        self.lr = float(lr)
        self.optimizer = optimizer
        self.noise_floor = float(noise_floor)
        self.lengthscale = float(lengthscale)
        self.seed = seed

    def __repr__(self) -> str:
        fitted = f"fitted on {len(self._xs)} points" if hasattr(self, "model_") else "not fitted"
        return (
            f"ExactGPSurrogate(iterations={self.iterations}, lr={self.lr:g}, "
            f"optimizer={self.optimizer!r}, noise_floor={self.noise_floor:g}, "
            f"lengthscale={self.lengthscale:g}, seed={self.seed}; {fitted})"
        )

    # ------------------------------------------------------------------ fitting

    def fit(self, context_x: torch.Tensor, context_y: torch.Tensor) -> ExactGPSurrogate:
        """Maximise the marginal likelihood on one function's context: ``context_x (Nc, 2)``
        rows ``(t, x)``, ``context_y (Nc,)`` values. Returns ``self``. The fit takes gradient
        steps of its own, so ``torch.no_grad()`` or ``torch.inference_mode()`` around it (as
        evaluation code has) changes nothing."""
        x = as_tensor("context_x", context_x, "(Nc, 2)", 2, last=2)
        y = as_tensor("context_y", context_y, "(Nc,)", 1, device=x.device)
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"context_y must have shape ({x.shape[0]},) to match context_x's {x.shape[0]} "
                f"points, got {tuple(y.shape)}"
            )
        if x.shape[0] < 2:
            raise ValueError(f"context_x must hold at least 2 points, got {x.shape[0]}")
        try:
            with torch.inference_mode(False):  # the fit's gradient steps, under inference_mode
                return self._fit(x.clone(), y.clone())  # tensors made there take no autograd
        except Exception:  # half of the new fit's state beside the old factors: unfit instead
            for name in ("model_", "likelihood_"):
                self.__dict__.pop(name, None)
            raise

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> ExactGPSurrogate:
        self._x_shift = x.amin(0)
        extent = x.amax(0) - self._x_shift
        self._x_scale = torch.where(extent > 0, extent, torch.ones_like(extent))
        self._y_shift = y.mean()
        spread = y.std()
        self._y_scale = spread if spread > 0 else torch.ones_like(spread)
        xs = (x - self._x_shift) / self._x_scale
        ys = (y - self._y_shift) / self._y_scale

        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(self.noise_floor)
        )
        model = _ExactGP(xs, ys, likelihood).to(device=x.device, dtype=F64)
        model.covar_module.base_kernel.lengthscale = torch.full(
            (1, 2), self.lengthscale, dtype=F64, device=x.device
        )
        model.covar_module.outputscale = torch.tensor(1.0, dtype=F64, device=x.device)
        likelihood.noise = torch.tensor(
            max(1e-2, 10 * self.noise_floor), dtype=F64, device=x.device
        )

        devices = [x.device] if x.device.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=devices),
            gpytorch.settings.max_cholesky_size(_ALWAYS_CHOLESKY),
            torch.enable_grad(),  # the fit takes gradient steps, under torch.no_grad() too
        ):
            torch.manual_seed(self.seed)
            try:
                self.loss_curve_ = self._optimise(model, likelihood, xs, ys)
            except NotPSDError:
                raise ValueError(
                    "the marginal-likelihood fit met a kernel matrix that is not positive "
                    "definite; "
                    f"raise noise_floor (now {self.noise_floor}) or remove duplicate context points"
                ) from None
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise ValueError(
                f"the marginal-likelihood optimisation ({self.optimizer}) diverged to NaN/inf "
                "hyperparameters: try the other optimizer, fewer iterations or a smaller lr"
            )
        model.eval().requires_grad_(False)  # fitted: predictions differentiate in the inputs only
        likelihood.eval()
        self.model_ = model
        self.likelihood_ = likelihood
        self._xs = xs
        self._factorise(ys)
        self._record_hyperparameters()
        return self

    def _optimise(
        self,
        model: _ExactGP,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        xs: torch.Tensor,
        ys: torch.Tensor,
    ) -> list[float]:
        model.train()
        likelihood.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        losses: list[float] = []

        def loss() -> torch.Tensor:
            value = -mll(model(xs), ys)
            losses.append(float(value.detach()))
            return value

        if self.iterations == 0:
            return losses
        if self.optimizer == "lbfgs":
            lbfgs = torch.optim.LBFGS(
                model.parameters(),
                lr=1.0,
                max_iter=self.iterations,
                max_eval=2 * self.iterations,
                line_search_fn="strong_wolfe",
            )

            def closure() -> torch.Tensor:
                lbfgs.zero_grad()
                value = loss()
                value.backward()
                return value

            lbfgs.step(closure)
            return losses
        adam = torch.optim.Adam(model.parameters(), lr=self.lr)
        for _ in range(self.iterations):
            adam.zero_grad()
            loss().backward()
            adam.step()
        return losses

    def _factorise(self, ys: torch.Tensor) -> None:
        with torch.no_grad():
            K = self.model_.covar_module(self._xs).to_dense()
            K = K + self._noise_std() * torch.eye(K.shape[0], dtype=F64, device=K.device)
            L, info = torch.linalg.cholesky_ex(K)
            if info > 0:
                raise ValueError(
                    "the fitted kernel matrix on context_x is not positive definite; raise "
                    f"noise_floor (now {self.noise_floor}) or remove duplicate context points"
                )
            self._L = L
            residual = ys - self.model_.mean_module.constant
            self._beta = torch.linalg.solve_triangular(L, residual[:, None], upper=False)[:, 0]
            n = ys.shape[0]
            log_ml = (
                -0.5 * self._beta @ self._beta
                - torch.log(torch.diagonal(L)).sum()
                - 0.5 * n * math.log(2 * math.pi)
            )
            self.log_marginal_likelihood_ = float(log_ml - n * torch.log(self._y_scale))

    def _noise_std(self) -> torch.Tensor:
        return self.likelihood_.noise.detach().reshape(())

    def _record_hyperparameters(self) -> None:
        kernel = self.model_.covar_module
        scale2 = self._y_scale**2
        lengthscale = kernel.base_kernel.lengthscale.detach().reshape(2) * self._x_scale
        self.lengthscale_ = lengthscale.cpu()
        self.outputscale_ = float(kernel.outputscale.detach() * scale2)
        self.noise_ = float(self._noise_std() * scale2)
        self.mean_ = float(
            self.model_.mean_module.constant.detach() * self._y_scale + self._y_shift
        )

    def hyperparameters(self) -> dict[str, torch.Tensor]:
        """The learned hyperparameters in the data's units (``lengthscale`` is ``(2,)``: t, x),
        float64 tensors on the CPU whatever device the fit ran on."""
        self._check_fitted()
        return {
            "lengthscale": self.lengthscale_.clone(),
            "outputscale": torch.tensor(self.outputscale_, dtype=F64),
            "noise": torch.tensor(self.noise_, dtype=F64),
            "mean": torch.tensor(self.mean_, dtype=F64),
        }

    # ------------------------------------------------------------------ prediction

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this ExactGPSurrogate is not fitted yet: call fit() first")

    def _project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised test points and ``V = L⁻¹ k(X, Z)`` ``(Nc, N)``."""
        z = (points - self._x_shift) / self._x_scale
        cross = self.model_.covar_module(self._xs, z).to_dense()
        return z, torch.linalg.solve_triangular(self._L, cross, upper=False)

    def _mean(self, V: torch.Tensor) -> torch.Tensor:
        standard = self.model_.mean_module.constant.reshape(()) + V.T @ self._beta
        return self._y_shift + self._y_scale * standard

    def predict(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        covariance: str = "time-slices",
        observation_noise: bool = False,
    ) -> Gaussian:
        """Posterior of ``u`` on the grid ``t (T,)`` × ``x (X,)``: mean ``(T, X)``; with
        ``covariance="time-slices"`` (default) the full posterior covariance within each time
        slice ``(T, X, X)``, with ``covariance="diagonal"`` the variances ``(T, X)``.
        ``observation_noise`` adds the learned noise variance (off: the latent u). Differentiable
        in ``t`` and ``x`` when either requires grad (the fit held fixed); no graph otherwise, nor
        under ``torch.no_grad()``."""
        self._check_fitted()
        choice("covariance", covariance, COVARIANCES)
        device = self._L.device
        t = as_tensor("t", t, "(T,)", 1, device=device)
        x = as_tensor("x", x, "(X,)", 1, device=device)
        points = grid_points(t, x)
        T, X = t.numel(), x.numel()
        with torch.set_grad_enabled(torch.is_grad_enabled() and points.requires_grad):
            z, V = self._project(points)
            mean = self._mean(V).reshape(T, X)
            noise = self._noise_std() if observation_noise else 0.0
            if covariance == "diagonal":
                variance = self._prior_variance(z) - V.pow(2).sum(0) + noise
                variance = (variance.clamp_min(0) * self._y_scale**2).reshape(T, X)
                return Gaussian(mean, variance, diagonal=True)
            slices = self.model_.covar_module(z.reshape(T, X, 2)).to_dense()
            blocks = V.reshape(-1, T, X).permute(1, 0, 2)  # (T, Nc, X)
            cov = torch.baddbmm(slices, blocks.transpose(1, 2), blocks, alpha=-1)
            cov = 0.5 * (cov + cov.transpose(1, 2))
            if observation_noise:
                cov = cov + noise * torch.eye(X, dtype=F64, device=device)
            return Gaussian(mean, cov * self._y_scale**2)

    def predict_points(self, target_x: torch.Tensor, observation_noise: bool = False) -> Gaussian:
        """Posterior mean and variances ``(N,)`` at scattered points ``target_x (N, 2)``,
        differentiable in ``target_x`` when it requires grad (the fit held fixed; no graph under
        ``torch.no_grad()``)."""
        self._check_fitted()
        points = as_tensor("target_x", target_x, "(N, 2)", 2, last=2, device=self._L.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and points.requires_grad):
            z, V = self._project(points)
            variance = self._prior_variance(z) - V.pow(2).sum(0)
            if observation_noise:
                variance = variance + self._noise_std()
            return Gaussian(self._mean(V), variance.clamp_min(0) * self._y_scale**2, diagonal=True)

    def _prior_variance(self, z: torch.Tensor) -> torch.Tensor:
        return self.model_.covar_module(z, diag=True)

    def fit_predict(
        self,
        context_x: torch.Tensor,
        context_y: torch.Tensor,
        t: torch.Tensor,
        x: torch.Tensor,
        covariance: str = "time-slices",
        progress: bool = False,
    ) -> Gaussian:
        """Fit one GP per function and predict each on the grid: ``context_x (B, Nc, 2)``,
        ``context_y (B, Nc)`` → mean ``(B, T, X)``, covariance ``(B, T, X, X)`` or ``(B, T, X)``.

        ``self`` ends fitted to the last function; ``batch_hyperparameters_`` holds every
        function's hyperparameters stacked along a leading ``B`` axis; ``progress`` (a bool)
        draws a bar of the fits.
        """
        progress = flag("progress", progress)
        context_x = as_tensor("context_x", context_x, "(B, Nc, 2)", 3, last=2)
        context_y = as_tensor("context_y", context_y, "(B, Nc)", 2, device=context_x.device)
        if context_y.shape != context_x.shape[:2]:
            raise ValueError(
                f"context_y must have shape {tuple(context_x.shape[:2])} to match context_x, "
                f"got {tuple(context_y.shape)}"
            )
        if context_x.shape[0] == 0:
            raise ValueError("context_x must hold at least one function, got B = 0")
        choice("covariance", covariance, COVARIANCES)
        means, covs, found = [], [], []
        for b in progress_bar(range(context_x.shape[0]), progress, "GP fits"):
            self.fit(context_x[b], context_y[b])
            prediction = self.predict(t, x, covariance)
            means.append(prediction.mean)
            covs.append(prediction.cov)
            found.append(self.hyperparameters())
        self.batch_hyperparameters_ = {k: torch.stack([h[k] for h in found]) for k in found[0]}
        return Gaussian(torch.stack(means), torch.stack(covs), prediction.is_diagonal or None)

    def on_grid(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        covariance: str = "time-slices",
        progress: bool = False,
    ) -> GridGP:
        """This GP as a :class:`GridGP` module on the grid ``t (T,)`` × ``x (X,)``: called with
        ``context_x (B, Nc, 2)``, ``context_y (B, Nc)`` it is :meth:`fit_predict` there, ready for
        :func:`physml.constrain` (one conservation row per function and time slice)."""
        return GridGP(self, t, x, covariance, progress)


class GridGP(nn.Module):
    """An :class:`ExactGPSurrogate` fitted to each function's context and predicted on a fixed
    ``(t, x)`` grid, as a module: ``forward(context_x (B, Nc, 2), context_y (B, Nc))`` → mean
    ``(B, T, X)`` with the covariance of each time slice ``(B, T, X, X)`` (``"time-slices"``) or
    the variances ``(B, T, X)`` (``"diagonal"``), float64 on ``context_x``'s device.

    The GP is refitted on every call (seeded: the same context gives the same posterior) and
    ends fitted to the last function; it holds no parameters or buffers of its own, so
    ``.to()`` leaves it as it is. Usually made by :meth:`ExactGPSurrogate.on_grid`.

    Args:
        gp: the :class:`ExactGPSurrogate` whose settings fit every function.
        t: the grid's times ``(T,)``.
        x: the grid's positions ``(X,)``.
        covariance: ``"time-slices"`` (what the ProbConserv update of a mass per slice needs)
            or ``"diagonal"``.
        progress: show a progress bar of the fits.
    """

    def __init__(
        self,
        gp: ExactGPSurrogate,
        t: torch.Tensor,
        x: torch.Tensor,
        covariance: str = "time-slices",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(gp, ExactGPSurrogate):
            raise TypeError(f"gp must be an ExactGPSurrogate, got {type(gp).__name__}")
        choice("covariance", covariance, COVARIANCES)
        self.gp = gp
        self.t = as_tensor("t", t, "(T,)", 1)
        self.x = as_tensor("x", x, "(X,)", 1)
        self.covariance = covariance
        self.progress = flag("progress", progress)

    def extra_repr(self) -> str:
        return (
            f"gp={self.gp!r}, grid=({self.t.numel()}, {self.x.numel()}), "
            f"covariance={self.covariance!r}"
        )

    def forward(self, context_x: torch.Tensor, context_y: torch.Tensor) -> Gaussian:
        return self.gp.fit_predict(
            context_x, context_y, self.t, self.x, self.covariance, self.progress
        )
