"""One rank rule (issue 27): every DMD's rank is decided by traj/engine/truncation.py, applied by the operator
factory in traj/engine/operator.py, nowhere else.

Two kinds of check: the code (an ast scan for own decompositions, the rule applied or a Truncation patched
outside the factory, rank bounds checked by hand) and the numbers (Efficient-KGA's and KGA's DMD are the
factory's on the same window to 1e-12; the randomized finder's rank is the rule's on its σ).
"""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import traj
from tests.conftest import write_store
from traj.engine import Engine
from traj.engine.operator import ReducedOperator
from traj.engine.randomized import randomized_operator
from traj.engine.truncation import truncate, truncate_sketch
from traj.errors import ParameterError
from traj.store import RunStore
from traj.training import KGA

PACKAGE = Path(traj.__file__).parent
OWN_DMD = {"pinv", "eig", "eigvals", "matrix_rank"}
RULE = {"truncate", "Truncation", "gavish_donoho_threshold", "known_noise_threshold", "noise_from_tail"}


def rank_decisions(path: Path) -> list[tuple[int, str]]:
    """(line, kind) of every place in one module that decides or overrides a rank by its own code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in OWN_DMD and "linalg" in ast.unparse(f.value):
                found.append((node.lineno, f"own decomposition linalg.{f.attr}"))
            elif isinstance(f, ast.Name) and f.id in RULE:
                found.append((node.lineno, f"{f.id}() outside the factory"))
            elif ast.unparse(f).endswith("replace") and node.args and (
                    ast.unparse(node.args[0]).split(".")[-1] in {"cut", "truncation"}
                    or any(k.arg in {"truncation", "rank"} for k in node.keywords)):
                found.append((node.lineno, "a Truncation patched"))
        elif isinstance(node, ast.Compare) and any(isinstance(o, (ast.Lt, ast.Gt, ast.LtE, ast.GtE)) for o in node.ops):
            if any(isinstance(s, ast.Name) and s.id == "rank" for s in (node.left, *node.comparators)):
                found.append((node.lineno, "rank bounds checked by hand"))
        elif isinstance(node, ast.ExceptHandler) and node.type is not None and "RankUnavailableError" in ast.unparse(
                node.type):
            found.append((node.lineno, "except RankUnavailableError"))
    return found


def test_the_scan_finds_each_kind_it_looks_for(tmp_path):
    """The scan can fail: each kind of decision, written into a module, is found."""
    module = tmp_path / "m.py"
    module.write_text(
        "import numpy as np\n"
        "a = z[:, 1:] @ np.linalg.pinv(z[:, :-1])\n"
        "e, q = np.linalg.eig(a)\n"
        "cut = truncate(s, rank=3)\n"
        "cut = replace(cut, rank=2)\n"
        "if rank > t:\n    pass\n"
        "try:\n    pass\nexcept RankUnavailableError:\n    pass\n")
    kinds = [kind for _, kind in rank_decisions(module)]
    assert kinds.count("own decomposition linalg.pinv") == 1 and "own decomposition linalg.eig" in kinds
    assert {"truncate() outside the factory", "a Truncation patched", "rank bounds checked by hand",
            "except RankUnavailableError"} <= set(kinds)


def test_no_rank_is_decided_outside_the_operator():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name in ("engine/operator.py", "engine/truncation.py") or name.startswith("store/"):  # store/: array ranks, not DMD ranks
            continue
        found += [f"{name}:{line}: {kind}" for line, kind in rank_decisions(path)]
    assert found == []


# ---------------------------------------------------------------------- KGA's DMD is the factory's
H = torch.tensor([0.05, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)  # λ = 1 − 0.3h: six distinct decay rates


def _quadratic_kga(**kw):
    torch.manual_seed(0)
    w_star = torch.randn(6, dtype=torch.float64)
    w = nn.Parameter(torch.full((6,), 2.0, dtype=torch.float64))
    kga = KGA(torch.optim.SGD([w], lr=0.3), [w], alpha=0.5, window=5, interval=4, eps=0.01, **kw)

    def steps(n):
        for _ in range(n):
            kga.zero_grad()
            (0.5 * (H * (w - w_star) ** 2).sum()).backward()
            kga.step()

    return kga, steps


def _factory_propagator(window: np.ndarray, rank, eps=0.01):
    """Re(Q_S Λ_S L_S) in the window's POD coordinates, from the factory alone."""
    op = ReducedOperator.from_gram(window.T @ window, rank=rank, n_features=window.shape[0], dtype=np.float64,
                                   excess="reduce")
    pod = window[:, :-1] @ op.modes_basis / op.singular_values[: op.rank]
    stable = np.abs(op.eigenvalues) < 1 - eps
    return op, pod, np.real(op.right[:, stable] @ np.diag(op.eigenvalues[stable]) @ op.left[stable])


def test_kgas_dmd_is_the_factorys():
    kga, steps = _quadratic_kga()
    steps(4)  # the refit at step 4, on θ0..θ4 (the history it leaves)
    window = np.stack(list(kga._snapshots), axis=1)
    op, pod, prop = _factory_propagator(window, "all")
    assert op.rank == 4
    np.testing.assert_allclose(kga.basis, pod, rtol=0, atol=1e-12)
    np.testing.assert_allclose(kga._propagator, prop, rtol=0, atol=1e-12)


def test_efficient_kgas_dmd_is_the_factorys_and_the_textbook_one():
    """After the first fit Efficient-KGA fits the r×t window z = Uᵀθ by the same factory (rank "all": U's rank was
    decided at the first fit) and carries the propagator into U's coordinates; on a window of full rank that is
    A = Z₂Z₁⁺'s own (the pinv/eig DMD Efficient-KGA ran before)."""
    kga, steps = _quadratic_kga(efficient=True)
    steps(4)  # first fit: U (6×4)
    assert kga.basis is not None and kga.basis.shape == (6, 4)
    steps(4)  # the efficient refit at step 8, on z4..z8 (the history it leaves)
    z = np.stack(list(kga._snapshots), axis=1)
    assert z.shape == (4, 5) and kga.log.refits == 2  # r numbers per snapshot
    op, pod, prop = _factory_propagator(z, "all")
    assert op.rank == 4
    np.testing.assert_allclose(kga._propagator, pod @ prop @ pod.T, rtol=0, atol=1e-12)
    a = z[:, 1:] @ np.linalg.pinv(z[:, :-1])
    lam, q = np.linalg.eig(a)
    stable = np.abs(lam) < 0.99
    textbook = np.real(q[:, stable] @ np.diag(lam[stable]) @ np.linalg.inv(q)[stable])
    np.testing.assert_allclose(np.sort_complex(lam), np.sort_complex(op.eigenvalues), rtol=0, atol=1e-8)
    np.testing.assert_allclose(kga._propagator, textbook, rtol=0, atol=1e-8 * np.abs(textbook).max())


# ---------------------------------------------------------------------- the randomized finder's rank is the rule's
def _noisy_low_rank(t=120, n=600, rank=5, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((t, rank)) @ rng.standard_normal((rank, n)) * 10
    return (signal + rng.standard_normal((t, n))).astype(np.float32)


@pytest.mark.parametrize("rank", ["auto", 7])
def test_the_randomized_finders_rank_is_the_rules(tmp_path, rank):
    data = _noisy_low_rank()
    store = RunStore(write_store(tmp_path / "n.zarr", data))
    rows = slice(0, data.shape[0])
    op = randomized_operator(Engine(), store, rank, rows=rows, dtype=np.float32, block=8)
    x = data[:-1].astype(np.float64)
    rule = truncate_sketch(op.singular_values, rank=rank, shape=(data.shape[1], data.shape[0] - 1),
                           dtype=np.float32, trace=float(np.einsum("ij,ij->", x, x)), n_oversamples=10)
    assert op.truncation.rank == rule.rank and op.truncation.rule == rule.rule
    if rank == "auto":  # the tail rule on a low-rank signal in white noise: the planted rank, as truncate says
        assert op.rank == 5 and op.truncation.rule == "gavish-donoho-tail-noise"
        assert op.truncation.noise == pytest.approx(rule.noise, rel=1e-6)
    full = truncate(np.linalg.svd(x, compute_uv=False), rank=rank, shape=(x.shape[1], x.shape[0]), dtype=np.float32,
                    source="gram")
    assert op.rank == full.rank


def test_the_randomized_finder_refuses_a_rank_beyond_its_window_before_any_pass(tmp_path):
    class NoPasses(Engine):
        def gram_times(self, *args, **kwargs):
            raise AssertionError("a pass was made")

    store = RunStore(write_store(tmp_path / "n.zarr", _noisy_low_rank(t=20, n=30)))
    for bad in (20, 0, "all", True):
        with pytest.raises(ParameterError, match=r"must lie in 1\.\.19 for this window"):
            randomized_operator(NoPasses(), store, bad, rows=slice(0, 20))
