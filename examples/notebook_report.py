# %% [markdown]
# # A gradient check in a notebook
#
# Open this file in Jupyter (as a notebook with jupytext, or cell by cell in VS Code / Spyder, which read
# the `# %%` markers), or run it as a script.  A `layerkit.Report` displays itself as HTML: the verdict,
# one row per block, the worst entries, the doctor's findings and, with matplotlib installed, the heatmap.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent) if "__file__" in globals() else "examples")

import forum_bug  # noqa: E402  (a course-style cost with a regularization bug)

report = forum_bug.problem().check()
report  # in a notebook, this cell shows report._repr_html_()

# %% [markdown]
# The picture alone: one heatmap per block of |analytical - numerical| / tolerance, failing entries outlined.

# %%
try:
    fig = report.plot()
except ImportError as exc:  # matplotlib is the plot extra: pip install 'layerkit[plot]'
    print(exc)

# %%
if __name__ == "__main__":
    html = report._repr_html_()
    print(report.verdict)
    print(f"HTML view: {len(html)} characters, picture inline: {'data:image/png' in html}")
