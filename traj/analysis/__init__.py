"""The offline analyses of a recorded run, one module per method of docs/methods.md: dmd (§1), cmd (§2),
prune (§3), conjugacy (§4); ``overview`` runs them all for ``traj report``. Each one checks its
options once (``*Params.checked``), fits them through the engine (``fit_*``) and returns a frozen
result with ``to_dict()``. KGA, which runs inside training, lives in :mod:`traj.training`."""
