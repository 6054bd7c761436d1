"""The model-update and guard figures read the right rows of a record and refuse the wrong one."""

import json
from pathlib import Path

import pytest
from benchmarking import load_benchmark

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
figures = load_benchmark("updates_figures")
TAUS = [0.5, 1.0, 2.0]


def row(method, strength, curve):
    return {"case": "heat-fno", "method": method, "lambda": strength, "seeds": 3,
            "nfr": curve[1], "nfr_se": 0.01, "nfr_curve": curve}  # fmt: skip


def record(chosen=3.0, name="model_update"):
    rows = [row("retrain", None, [0.1, 0.2, 0.0])]
    for method in ("pc-focal", "pc-uniform"):
        rows += [row(method, s, [s, s, 0.0]) for s in (1.0, 3.0)]
    return {"benchmark": name, "curve_tau_over_median": TAUS, "rows": rows,
            "done_when": {"heat-fno": {"lambda": chosen}, "holds": False}}  # fmt: skip


def test_nfr_curves_take_the_chosen_lambda_of_each_method():
    curves = figures.nfr_curves(record(chosen=1.0), "heat-fno")
    assert curves == {
        "retrain": [0.1, 0.2, 0.0],
        "pc-focal λ=1": [1.0, 1.0, 0.0],
        "pc-uniform λ=1": [1.0, 1.0, 0.0],
    }


def test_nfr_curves_add_the_warm_records_control_and_its_own_choice():
    warm = record(chosen=3.0, name="model_update_warm")
    warm["rows"].append(row("warm", None, [0.0, 0.0, 0.0]))
    curves = figures.nfr_curves(record(chosen=1.0), "heat-fno", warm)
    assert curves["warm start, λ=0"] == [0.0, 0.0, 0.0]
    assert curves["warm start, pc-focal λ=3"] == [3.0, 3.0, 0.0]
    warm["curve_tau_over_median"] = [1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="τ grid"):
        figures.nfr_curves(record(), "heat-fno", warm)


def test_nfr_curves_name_the_cases_there_are_and_refuse_ambiguous_rows():
    with pytest.raises(ValueError, match=r"case must be one of \['heat-fno'\], got 'burgers'"):
        figures.nfr_curves(record(), "burgers")
    doubled = record()
    doubled["rows"].append(row("retrain", None, [0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="expected one row"):
        figures.nfr_curves(doubled, "heat-fno")


def test_the_figures_draw_from_the_committed_records(tmp_path):
    assert figures.main(["--out", str(tmp_path)]) == 0
    for name in ("model_update-nfr.png", "guarded_surrogate-tradeoff.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the retrain curve the figure draws passes through the record's own nfr at τ = 1
    result = json.loads((RESULTS / "model_update.json").read_text())
    at_one = result["curve_tau_over_median"].index(1.0)
    for case in (c for c in result["done_when"] if c != "holds"):
        retrain = figures._one(result, case=case, method="retrain")
        assert figures.nfr_curves(result, case)["retrain"][at_one] == pytest.approx(retrain["nfr"])


def test_no_record_is_a_usage_error_and_makes_no_folder(tmp_path, capsys):
    out = tmp_path / "figures"
    with pytest.raises(SystemExit) as refusal:
        figures.main(["--results", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert refusal.value.code == 2 and err.startswith("usage: ")
    assert err.splitlines()[-1].endswith(
        f": error: --results: no model_update.json or guarded_surrogate.json in {tmp_path}"
    )
    assert not out.exists()


def test_a_one_seed_record_draws_without_an_error_bar(tmp_path):
    """One seed has no standard error: the record stores null, which the figure multiplied."""
    one_seed = record()
    for entry in one_seed["rows"]:
        entry["nfr_se"] = None
    path = figures.nfr_figure(one_seed, tmp_path / "nfr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
