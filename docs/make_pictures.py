"""Regenerate the README's pictures from the code:  python docs/make_pictures.py  (needs layerkit[plot]).

* docs/forum_bug.png: where the gradients of examples/forum_bug.py disagree (Report.plot);
* docs/course_port.png: the same bug found by the default (auto) mode in examples/course_port.py, whose
  directional check measured only the localized entries;
* docs/sweep.png: the error of each method against the step on the debug network (layerkit sweep --plot).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


def main() -> None:
    import course_port
    import forum_bug
    import matplotlib.pyplot as plt

    import layerkit
    from layerkit.diagnosis.sweep import plot_sweep, sweep_steps

    for name, report in (("forum_bug.png", forum_bug.problem().check()),
                         ("course_port.png", course_port.problem().check())):
        fig = report.plot()
        fig.savefig(HERE / name, dpi=100)
        plt.close(fig)
        print(f"wrote {HERE / name}: {report.verdict.split(':')[0].strip()}")
    result = sweep_steps(layerkit.Problem.debug(3.0), ["forward", "central", "richardson"])
    plot_sweep(result, str(HERE / "sweep.png"))
    print(f"wrote {HERE / 'sweep.png'}")


if __name__ == "__main__":
    main()
