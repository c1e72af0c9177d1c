"""Benchmarks of rnnfast against torch.nn, and the hardware report of the planner's kernels.

    python -m bench                 # default grid on the default device, results into bench/results/
    python -m bench --smoke         # a tiny grid in seconds (CI); writes files only with --out
    python -m bench --full          # the large grid (meant for a GPU)
    python -m bench report          # planner choices and compiled resources on sm_80 / sm_90

Modules: cases (what is measured), providers (who is measured), measure (time and memory),
results (table, CSV/JSON/markdown, plot, run metadata), report (hardware report), hardware (offline
compiles of the kernels as launched, for the report and tests/test_compile.py), run (the loop).
"""
