"""BOON's fast paths against the plain formulas they replace.

- Dirichlet walls of several conditions written by one ``where`` (``write_rows``) equal the
  conditions' ``cat`` writes one after the other, values and gradients, corners included.
- Pivots moved out of the floor by ``maximum``/``copysign`` (``_safe``) equal the ``where`` form,
  values and gradients.
"""

from __future__ import annotations

import pytest
import torch

from physml.constraints.operator import DirichletRows, _safe, write_rows


def _rows(generator: torch.Generator) -> list[DirichletRows]:
    """Three Dirichlet conditions on a (batch, channel, 5, 6) output: both walls of axis -2,
    both of axis -1 (values varying per sample and along the wall), the left of axis -2 again."""
    values = lambda *shape: torch.randn(*shape, generator=generator, requires_grad=True)  # noqa: E731
    return [
        DirichletRows(-2, values(1, 1, 1), values(1, 1, 6)),
        DirichletRows(-1, values(3, 1, 5), values(1, 1, 1)),
        DirichletRows(-2, values(3, 1, 6), None),
    ]


def _leaves(rows: list[DirichletRows]) -> list[torch.Tensor]:
    return [value for row in rows for value in row.values if value is not None]


@pytest.mark.parametrize("count", [2, 3])
def test_dirichlet_walls_in_one_where_equal_the_writes_one_by_one(count):
    generator = torch.Generator().manual_seed(0)
    rows = _rows(generator)[:count]
    y = torch.randn(3, 4, 5, 6, generator=generator, requires_grad=True)
    weights = torch.randn(3, 4, 5, 6, generator=generator)
    expected = y
    for row in rows:
        expected = row.write(expected)
    together = write_rows(rows, y)
    assert torch.equal(together, expected)  # a selection: exact, later conditions win
    assert torch.equal(write_rows(rows, y), together)  # laid out once, reused
    inputs = [y, *_leaves(rows)]
    grads_expected = torch.autograd.grad((expected * weights).sum(), inputs)
    grads_together = torch.autograd.grad((together * weights).sum(), inputs)
    for a, b in zip(grads_together, grads_expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_dirichlet_walls_laid_out_for_one_dtype_are_laid_out_again_for_another():
    """The layout kept for float64 outputs is not reused for float32 ones (which would promote
    them to float64): each dtype gets its own, with the same walls."""
    rows = [
        DirichletRows(-2, torch.tensor([[[0.25]]], dtype=torch.float64), None),
        DirichletRows(-1, None, torch.tensor([[[-0.5]]], dtype=torch.float64)),
    ]
    for dtype in (torch.float64, torch.float32):
        y = torch.randn(2, 3, 5, 6, dtype=dtype)
        out = write_rows(rows, y)
        assert out.dtype == dtype
        assert (out[..., :, -1] == -0.5).all() and (out[..., 0, :-1] == 0.25).all()
        assert torch.equal(out[..., 1:, :-1], y[..., 1:, :-1])


def test_one_dirichlet_condition_and_none_write_as_before():
    generator = torch.Generator().manual_seed(1)
    (row,) = _rows(generator)[:1]
    y = torch.randn(2, 4, 5, 6, generator=generator)
    assert torch.equal(write_rows([row], y), row.write(y))
    assert write_rows([], y) is y


def test_moving_pivots_out_of_the_floor_equals_the_where_form():
    generator = torch.Generator().manual_seed(2)
    value = torch.randn(200, generator=generator, dtype=torch.float64) * 0.1
    value[:3] = torch.tensor([0.0, -0.0, 1e-9], dtype=torch.float64)
    floor = torch.rand(200, generator=generator, dtype=torch.float64) * 0.1 + 1e-7
    value.requires_grad_(True)
    floor.requires_grad_(True)
    expected = torch.where(value.abs() < floor, floor.copysign(value), value)
    found = _safe(value, floor)
    assert torch.equal(found, expected)
    weights = torch.randn(200, generator=generator, dtype=torch.float64)
    tie_free = (value.abs() != floor).all()  # maximum splits the gradient at ties
    assert tie_free
    for a, b in zip(
        torch.autograd.grad((found * weights).sum(), (value, floor)),
        torch.autograd.grad((expected * weights).sum(), (value, floor)),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    tiny = torch.tensor([0.0, -0.0, 1e-9, -1e-9, 0.5], dtype=torch.float64)
    reference = torch.where(tiny.abs() < 1e-7, torch.full_like(tiny, 1e-7).copysign(tiny), tiny)
    assert torch.equal(_safe(tiny), reference)
