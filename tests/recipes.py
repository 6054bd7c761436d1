"""A tiny recipe for testing the dataset plumbing independently of any solver.

``u(x, t) = a·e^{-t}·sin(πx)`` with an amplitude ``a ~ N(0, 1)`` drawn from each sample's seed.
"""

import os
import time

import numpy as np
import torch

from pdes import problems


class ToyProblem(problems.Problem):
    name = "toy"
    description = "decaying sine with a random amplitude (tests only)"
    options = {
        "nx": problems.Option(9, "grid points"),
        "nt": problems.Option(4, "snapshots"),
    }

    def coordinates(self, settings):
        return {
            "t": np.linspace(0.0, 1.0, settings["nt"]),
            "x": np.linspace(0.0, 1.0, settings["nx"]),
        }

    def attributes(self, settings):
        return {"pde": self.name, "boundary": "dirichlet", "solver": "closed form", **settings}

    def generate(self, seeds, settings, device="cpu"):
        time.sleep(float(os.environ.get("TOY_RECIPE_DELAY", "0")))  # makes a run killable
        a = torch.stack([torch.randn((), generator=problems.generator(s)) for s in seeds])
        c = self.coordinates(settings)
        t = torch.from_numpy(c["t"])[None, :, None]
        x = torch.from_numpy(c["x"])[None, None, :]
        u = a.double()[:, None, None] * torch.exp(-t) * torch.sin(np.pi * x)
        return problems.Batch(
            u=u.to(device), params={"a": a.double()}, fields={"u_squared": (u * u).to(device)}
        )


TOY = problems.register(ToyProblem())
