"""``python -m traj``: the same as the ``traj`` command (for an environment whose scripts are not on PATH)."""

from .cli.app import main

if __name__ == "__main__":
    main()
