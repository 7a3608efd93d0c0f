"""`sema-analyze`: curvature, sharpness and loss landscapes of trained runs (online and averaged weights).

hessian.py    top Hessian eigenvalue (power iteration on Hessian-vector products) and trace (Hutchinson)
sharpness.py  epsilon-sharpness: largest loss increase in an L2 ball (projected gradient ascent)
landscape.py  loss along the line between two weight sets; filter-normalised 1-D/2-D landscapes; PNG plots
loading.py    rebuild a run from its run directory (task setup, weights, fixed analysis batches)
cli.py        the command: analyse every run under a directory, write <run_dir>/analysis.json
"""
